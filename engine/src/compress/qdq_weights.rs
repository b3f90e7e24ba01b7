//! Weight-only quantized layers as QDQ ONNX: a weight stored as integer codes (`quantize`,
//! 1–8-bit linear, and the binary/ternary `lowbit` schemes, whose values are `α · {−1, 0, +1}`)
//! becomes a uint8/int8 initializer behind a `DequantizeLinear` (per-axis when the scales are
//! per-channel) that produces the weight under its old name, so the file stores one byte per
//! weight and every ONNX runtime reads it. Activations stay float, as in Lithe.
//!
//! A weight is converted only when `DequantizeLinear` gives back exactly the graph's f32 weight
//! (`(code − zero_point) · scale` in f32, ONNX's definition); a weight changed after it was
//! quantized (for instance by fine-tuning) stays f32. log2 and DoReFa codes are not on a linear
//! grid and stay f32 (the dense fallback), as do k-means codebooks (kept in `.lithe`).

use super::lowbit::{LowBitTensor, Scheme};
use super::quantize::QuantizedTensor;
use crate::graph::{Graph, Node, Op};
use crate::tensor::{DType, Tensor, from_vec, to_contiguous};
use crate::{Error, Result};
use std::collections::BTreeMap;

/// Integer codes of one weight, ready for `DequantizeLinear`.
struct Codes {
    /// Codes in row-major order, as exact integers of `dtype`.
    codes: Vec<f32>,
    dtype: DType,
    axis: Option<usize>,
    scales: Vec<f32>,
    zero_points: Vec<f32>,
}

/// `(channels, inner)` of a per-axis layout.
fn layout(shape: &[usize], axis: Option<usize>) -> (usize, usize) {
    match axis {
        Some(a) if a < shape.len() => (shape[a], shape[a + 1..].iter().product()),
        _ => (1, 1),
    }
}

impl Codes {
    /// Whether `DequantizeLinear` of these codes is bit-for-bit `w`.
    fn reproduces(&self, w: &Tensor) -> bool {
        let (channels, inner) = layout(w.shape(), self.axis);
        if self.codes.len() != w.len()
            || self.scales.len() != channels
            || self.zero_points.len() != channels
        {
            return false;
        }
        let data = to_contiguous(w);
        data.iter()
            .zip(&self.codes)
            .enumerate()
            .all(|(i, (&v, &q))| {
                let c = (i / inner.max(1)) % channels.max(1);
                ((q - self.zero_points[c]) * self.scales[c]).to_bits() == v.to_bits()
            })
    }
}

fn from_quantized(q: &QuantizedTensor) -> Codes {
    Codes {
        codes: q.codes.iter().map(|&c| f32::from(c)).collect(),
        dtype: DType::U8,
        axis: q.axis,
        scales: q.scales.clone(),
        zero_points: q.zero_points.iter().map(|&z| f32::from(z)).collect(),
    }
}

/// Binary and ternary weights are `α_c · s` with `s ∈ {−1, 0, +1}`: int8 codes `s`, scale `α_c`.
fn from_signs(t: &LowBitTensor, w: &Tensor) -> Option<Codes> {
    if !matches!(t.scheme, Scheme::Binary | Scheme::Ternary) {
        return None;
    }
    let (channels, inner) = layout(&t.shape, t.axis);
    if t.scales.len() != channels || t.scales.iter().any(|a| !(a.is_finite() && *a > 0.0)) {
        return None;
    }
    let data = to_contiguous(w);
    let codes = data
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let s = (v / t.scales[(i / inner.max(1)) % channels.max(1)]).round();
            s.clamp(-1.0, 1.0)
        })
        .collect();
    Some(Codes {
        codes,
        dtype: DType::I8,
        axis: t.axis,
        scales: t.scales.clone(),
        zero_points: vec![0.0; channels],
    })
}

/// `g` with every weight of `quantized` and every binary/ternary weight of `lowbit` stored as
/// codes behind `DequantizeLinear` (see the module docs); returns the graph and the converted
/// weights' names.
pub fn weights_as_qdq(
    g: &Graph,
    quantized: &BTreeMap<String, QuantizedTensor>,
    lowbit: &BTreeMap<String, LowBitTensor>,
) -> Result<(Graph, Vec<String>)> {
    let mut out = g.clone();
    let mut front: Vec<Node> = Vec::new();
    let mut done = Vec::new();
    for (name, w) in &g.weights {
        let codes = match (quantized.get(name), lowbit.get(name)) {
            (Some(q), _) => Some(from_quantized(q)),
            (None, Some(t)) => from_signs(t, w),
            _ => None,
        };
        let Some(c) = codes.filter(|c| c.reproduces(w)) else {
            continue;
        };
        let fresh = |suffix: &str| -> Result<String> {
            let n = format!("{name}_{suffix}");
            if g.weights.contains_key(&n) {
                return Err(Error::Invalid(format!(
                    "QDQ export: the name `{n}` is taken by another weight"
                )));
            }
            Ok(n)
        };
        let (qn, sn, zn) = (fresh("quantized")?, fresh("scale")?, fresh("zero_point")?);
        let pshape: Vec<usize> = if c.axis.is_some() {
            vec![c.scales.len()]
        } else {
            vec![]
        };
        out.weights.remove(name);
        out.weights
            .insert(qn.clone(), from_vec(w.shape(), c.codes)?);
        out.weights.insert(sn.clone(), from_vec(&pshape, c.scales)?);
        out.weights
            .insert(zn.clone(), from_vec(&pshape, c.zero_points)?);
        front.push(Node {
            name: format!("{name}_DequantizeLinear"),
            op: Op::DequantizeLinear {
                axis: c.axis.unwrap_or(0) as i64,
                from: c.dtype,
            },
            inputs: vec![qn, sn, zn],
            outputs: vec![name.clone()],
        });
        done.push(name.clone());
    }
    front.append(&mut out.nodes);
    out.nodes = front;
    out.validate()?;
    out.dtypes()?;
    Ok((out, done))
}

//! Activation quantization for the `qat` pass: binarized activations as in BNNs (Hubara et al.
//! 2016) and DoReFa k-bit activations (Zhou et al. 2016), written into the graph with standard
//! ONNX operators so the quantized model exports, re-imports and runs in onnxruntime as it is.
//!
//! - `binary`: the activation feeding each hidden Gemm/Conv becomes `Sign(x)` (values −1, 0,
//!   +1; 0 only at exactly 0). Where that activation is a `Relu` (possibly behind max-pooling,
//!   flattening or reshaping, which commute with the sign), the `Relu` is replaced by the
//!   `Sign`, as a BNN has no ReLU; otherwise a `Sign` node is inserted. Training uses the
//!   hardtanh straight-through estimator ([`crate::graph::Op::Sign`]).
//! - `dorefa` with `k` bits: `x_q = s/n · Round(n/s · Clip(x, 0, s))`, `n = 2^k − 1`, i.e. the
//!   DoReFa quantizer of `clip(x/s, 0, 1)` on the activation range `[0, s]`. `s` is the largest
//!   value of that activation over calibration images (`range` overrides it; DoReFa's own choice
//!   is `s = 1`). Four nodes: `Clip`, `Mul`, `Round`, `Mul`, with the two scales as `[1]`
//!   constants (not trainable). Training differentiates `Round` straight through and `Clip`
//!   exactly (zero outside `[0, s]`).
//!
//! The first layer keeps its float input (the image), as in both papers: a Gemm/Conv whose data
//! input comes from a graph input through shape-only ops is left alone, and so is any input
//! that is a weight.

use crate::graph::{Graph, Node, Op};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The activation quantizer of a `qat` pass: `{"scheme": "binary"}` or
/// `{"scheme": "dorefa", "bits": 2}` (optionally `"range": 1.0`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "snake_case")]
pub enum ActQuant {
    /// Sign activations (1 bit).
    Binary,
    /// DoReFa k-bit activations on `[0, range]`.
    Dorefa {
        /// Bits per activation, 1–8.
        bits: u8,
        /// Upper end of the range; `None` = calibrated maximum of each activation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        range: Option<f32>,
    },
}

impl ActQuant {
    /// Bits per activation.
    pub fn bits(&self) -> u8 {
        match self {
            ActQuant::Binary => 1,
            ActQuant::Dorefa { bits, .. } => *bits,
        }
    }

    /// Checks the knobs.
    pub fn check(&self) -> Result<()> {
        if let ActQuant::Dorefa { bits, range } = self {
            if !(1..=8).contains(bits) {
                return Err(Error::Invalid(format!(
                    "DoReFa activations take 1–8 bits, got {bits}"
                )));
            }
            if let Some(r) = range
                && !(r.is_finite() && *r > 0.0)
            {
                return Err(Error::Invalid(format!(
                    "DoReFa activation range {r} must be a positive number"
                )));
            }
        }
        Ok(())
    }

    /// Short description, e.g. `binary activations` or `2-bit DoReFa activations`.
    pub fn describe(&self) -> String {
        match self {
            ActQuant::Binary => "binary (sign) activations".into(),
            ActQuant::Dorefa { bits, .. } => format!("{bits}-bit DoReFa activations"),
        }
    }
}

/// Ops that only move or select values, so a quantizer commutes with them.
fn passes_through(op: &Op) -> bool {
    matches!(
        op,
        Op::Flatten { .. } | Op::Reshape { .. } | Op::MaxPool(_) | Op::GlobalMaxPool
    )
}

/// Which hidden Gemm/Conv nodes get quantized inputs: `(node index, data input value)`.
fn targets(g: &Graph) -> Vec<(usize, String)> {
    let producer: BTreeMap<&str, usize> = g
        .nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.outputs.iter().map(move |o| (o.as_str(), i)))
        .collect();
    let from_input = |v: &str| -> bool {
        let mut v = v.to_string();
        loop {
            if g.inputs.iter().any(|i| i.name == v) {
                return true;
            }
            match producer.get(v.as_str()).map(|&i| &g.nodes[i]) {
                Some(n) if matches!(n.op, Op::Flatten { .. } | Op::Reshape { .. }) => {
                    v = n.inputs[0].clone();
                }
                _ => return false,
            }
        }
    };
    g.nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| matches!(n.op, Op::Gemm(_) | Op::Conv(_)))
        .filter_map(|(i, n)| {
            let x = n.inputs.first()?;
            (!g.weights.contains_key(x) && !from_input(x)).then(|| (i, x.clone()))
        })
        .collect()
}

/// The `Relu` behind `v` through pass-through ops whose outputs have one consumer each, if any.
fn relu_behind(g: &Graph, v: &str) -> Option<usize> {
    let consumers = |v: &str| {
        g.nodes
            .iter()
            .filter(|n| n.inputs.iter().any(|i| i == v))
            .count()
            + usize::from(g.outputs.iter().any(|o| o == v))
    };
    let mut v = v.to_string();
    loop {
        if consumers(&v) != 1 {
            return None;
        }
        let i = g.nodes.iter().position(|n| n.outputs.contains(&v))?;
        let n = &g.nodes[i];
        if matches!(n.op, Op::Relu) {
            return Some(i);
        }
        if !passes_through(&n.op) {
            return None;
        }
        v = n.inputs[0].clone();
    }
}

/// A name not used by any value, weight or node of `g`.
fn fresh(g: &Graph, base: &str) -> String {
    let used = |s: &str| {
        g.weights.contains_key(s)
            || g.inputs.iter().any(|v| v.name == s)
            || g.nodes
                .iter()
                .any(|n| n.name == s || n.outputs.iter().any(|o| o == s))
    };
    let mut name = base.to_string();
    let mut k = 1;
    while used(&name) {
        name = format!("{base}_{k}");
        k += 1;
    }
    name
}

/// Writes the activation quantizers of `spec` into `g` (see the module docs). `ranges` gives
/// the calibrated `(min, max)` of each Gemm/Conv's data input by node name
/// ([`super::lowbit::calibrate`]); DoReFa without a fixed `range` needs it. Returns how many
/// activations were quantized; the graph is validated afterwards.
pub fn apply(
    g: &mut Graph,
    spec: &ActQuant,
    ranges: &BTreeMap<String, (f32, f32)>,
) -> Result<usize> {
    spec.check()?;
    let tg = targets(g);
    if tg.is_empty() {
        return Err(Error::Invalid(
            "no hidden Gemm/Conv layer to quantize activations for".into(),
        ));
    }
    // Insert from the back so earlier indices stay valid.
    for (i, x) in tg.iter().rev() {
        let consumer = g.nodes[*i].name.clone();
        match spec {
            ActQuant::Binary => {
                if let Some(r) = relu_behind(g, x) {
                    g.nodes[r].op = Op::Sign;
                } else {
                    let name = fresh(g, &format!("{consumer}.act_sign"));
                    g.nodes.insert(*i, Node::new(name.clone(), Op::Sign, &[x]));
                    g.nodes[*i + 1].inputs[0] = name;
                }
            }
            ActQuant::Dorefa { bits, range } => {
                let s = match range {
                    Some(r) => *r,
                    None => {
                        let (_, hi) = ranges.get(&consumer).copied().ok_or_else(|| {
                            Error::Invalid(format!(
                                "no calibrated activation range for `{consumer}`"
                            ))
                        })?;
                        if !(hi.is_finite() && hi > 0.0) {
                            return Err(Error::Invalid(format!(
                                "the input of `{consumer}` never exceeds 0 on the calibration \
                                 images (max {hi}); DoReFa activations need a positive range"
                            )));
                        }
                        hi
                    }
                };
                let n = ((1u32 << bits) - 1) as f32;
                let up = fresh(g, &format!("{consumer}.act_up"));
                g.weights
                    .insert(up.clone(), crate::tensor::from_vec(&[1], vec![n / s])?);
                let down = fresh(g, &format!("{consumer}.act_down"));
                g.weights
                    .insert(down.clone(), crate::tensor::from_vec(&[1], vec![s / n])?);
                let clip = fresh(g, &format!("{consumer}.act_clip"));
                let scaled = fresh(g, &format!("{consumer}.act_scaled"));
                let round = fresh(g, &format!("{consumer}.act_round"));
                let q = fresh(g, &format!("{consumer}.act_q"));
                let nodes = [
                    Node::new(clip.clone(), Op::Clip { min: 0.0, max: s }, &[x]),
                    Node::new(scaled.clone(), Op::Mul, &[&clip, &up]),
                    Node::new(round.clone(), Op::Round, &[&scaled]),
                    Node::new(q.clone(), Op::Mul, &[&round, &down]),
                ];
                for (k, nd) in nodes.into_iter().enumerate() {
                    g.nodes.insert(*i + k, nd);
                }
                g.nodes[*i + 4].inputs[0] = q;
            }
        }
    }
    g.validate()?;
    g.infer_shapes(1)?;
    Ok(tg.len())
}

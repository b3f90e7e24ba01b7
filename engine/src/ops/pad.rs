//! Pad: constant, reflect, edge and wrap borders, any rank.

use super::norm_axis;
use crate::graph::{Node, PadAttrs, PadMode};
use crate::tensor::Tensor;
use crate::{Error, Result};
use ndarray::IxDyn;

/// `(begin, end)` padding of every axis of a rank-`rank` input.
fn per_axis(node: &Node, a: &PadAttrs, rank: usize) -> Result<Vec<(usize, usize)>> {
    let bad = |detail: String| Error::Attribute {
        node: node.name.clone(),
        op: "Pad",
        attr: "pads",
        detail,
    };
    let axes: Vec<usize> = if a.axes.is_empty() {
        (0..rank).collect()
    } else {
        a.axes
            .iter()
            .map(|&x| norm_axis(node, x, rank, "axes"))
            .collect::<Result<_>>()?
    };
    if a.pads.len() != 2 * axes.len() {
        return Err(bad(format!(
            "has {} values; {} are needed for {} axes",
            a.pads.len(),
            2 * axes.len(),
            axes.len()
        )));
    }
    let mut out = vec![(0, 0); rank];
    let mut seen = vec![false; rank];
    for (k, &ax) in axes.iter().enumerate() {
        if std::mem::replace(&mut seen[ax], true) {
            return Err(bad(format!("axis {ax} is padded twice")));
        }
        out[ax] = (a.pads[k], a.pads[k + axes.len()]);
    }
    Ok(out)
}

pub(super) fn pad_shape(node: &Node, a: &PadAttrs, s: &[usize]) -> Result<Vec<usize>> {
    let p = per_axis(node, a, s.len())?;
    let mut out = Vec::with_capacity(s.len());
    for (&d, &(b, e)) in s.iter().zip(&p) {
        if d == 0 && a.mode != PadMode::Constant && b + e > 0 {
            return Err(Error::shape(
                &node.name,
                "Pad",
                format!("{} padding of an empty axis", a.mode.name()),
                &[s],
            ));
        }
        out.push(
            d.checked_add(b)
                .and_then(|v| v.checked_add(e))
                .ok_or_else(|| Error::shape(&node.name, "Pad", "padding overflows", &[s]))?,
        );
    }
    let n = crate::tensor::checked_numel(&out)?;
    if n > crate::graph::limits::MAX_TENSOR_ELEMENTS {
        return Err(Error::Limit {
            what: "Pad output",
            got: n as u64,
            limit: crate::graph::limits::MAX_TENSOR_ELEMENTS as u64,
        });
    }
    Ok(out)
}

/// The input index an output index `o` of an axis of size `d` padded by `b` in front reads, or
/// `None` for a constant fill.
fn source(mode: PadMode, o: usize, b: usize, d: usize) -> Option<usize> {
    let i = o as i64 - b as i64;
    let n = d as i64;
    if (0..n).contains(&i) {
        return Some(i as usize);
    }
    let j = match mode {
        PadMode::Constant => return None,
        PadMode::Edge => i.clamp(0, n - 1),
        PadMode::Wrap => i.rem_euclid(n),
        PadMode::Reflect if n == 1 => 0,
        PadMode::Reflect => {
            let period = 2 * (n - 1);
            let m = i.rem_euclid(period);
            if m < n { m } else { period - m }
        }
    };
    Some(j as usize)
}

/// Calls `f` with the flat input index each output element copies (`None`: the fill value), in
/// output order, without materialising the map. Returns the output shape.
fn for_each_source(
    node: &Node,
    a: &PadAttrs,
    s: &[usize],
    mut f: impl FnMut(Option<usize>),
) -> Result<Vec<usize>> {
    let out = pad_shape(node, a, s)?;
    let p = per_axis(node, a, s.len())?;
    let total = crate::tensor::checked_numel(&out)?;
    let mut in_strides = vec![1usize; s.len()];
    for i in (0..s.len().saturating_sub(1)).rev() {
        in_strides[i] = in_strides[i + 1] * s[i + 1];
    }
    let mut idx = vec![0usize; out.len()];
    for _ in 0..total {
        let mut src = Some(0usize);
        for ax in 0..out.len() {
            src = match (src, source(a.mode, idx[ax], p[ax].0, s[ax])) {
                (Some(f), Some(i)) => Some(f + i * in_strides[ax]),
                _ => None,
            };
        }
        f(src);
        for ax in (0..out.len()).rev() {
            idx[ax] += 1;
            if idx[ax] < out[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
    Ok(out)
}

pub(super) fn pad(node: &Node, a: &PadAttrs, x: &Tensor) -> Result<Tensor> {
    let xs = crate::tensor::to_contiguous(x);
    let mut y = Vec::with_capacity(crate::tensor::checked_numel(&pad_shape(
        node,
        a,
        x.shape(),
    )?)?);
    let out = for_each_source(node, a, x.shape(), |m| {
        y.push(m.and_then(|i| xs.get(i).copied()).unwrap_or(a.value));
    })?;
    Tensor::from_shape_vec(IxDyn(&out), y).map_err(|e| Error::Invalid(e.to_string()))
}

/// The gradient of Pad: each output gradient flows to the input element it copied.
pub(super) fn pad_backward(node: &Node, a: &PadAttrs, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let gs = crate::tensor::to_contiguous(dy);
    let mut dx = vec![0.0f32; x.len()];
    let mut k = 0;
    for_each_source(node, a, x.shape(), |m| {
        if let (Some(d), Some(g)) = (m.and_then(|i| dx.get_mut(i)), gs.get(k)) {
            *d += g;
        }
        k += 1;
    })?;
    Tensor::from_shape_vec(IxDyn(x.shape()), dx).map_err(|e| Error::Invalid(e.to_string()))
}

//! Planned elementwise nodes: activations, `Add`, inference `BatchNormalization` and the
//! shape-only ops, computed in the buffer of an input that dies at the node when there is one
//! (no allocation, no `ndarray` iterator), otherwise into a pooled buffer.
//!
//! Each computes exactly the reference op's expression (same operations in the same order per
//! value), so the results are bit-identical to [`crate::ops::forward`]; anything they do not
//! take (a broadcast other than one repeated block, a channel count that differs from the
//! packed statistics) runs the reference op, which also reports the errors.

use crate::graph::{Graph, Node, Op};
use crate::ops::activation::{leaky_relu, sigmoid};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// An activation applied value by value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    /// `max(v, 0)`.
    Relu,
    /// `min(max(v, lo), hi)`.
    Clip(f32, f32),
    /// `1 / (1 + e^−v)`.
    Sigmoid,
    /// `tanh v`.
    Tanh,
    /// `v` or `α·v` below zero.
    LeakyRelu(f32),
}

impl Act {
    /// The activation of `op`, if it is one of these.
    pub fn of(op: &Op) -> Option<Act> {
        match *op {
            Op::Relu => Some(Act::Relu),
            Op::Clip { min, max } => Some(Act::Clip(min, max)),
            Op::Sigmoid => Some(Act::Sigmoid),
            Op::Tanh => Some(Act::Tanh),
            Op::LeakyRelu { alpha } => Some(Act::LeakyRelu(alpha)),
            _ => None,
        }
    }

    /// One value, as the reference op computes it.
    #[inline(always)]
    pub fn one(self, v: f32) -> f32 {
        match self {
            Act::Relu => v.max(0.0),
            Act::Clip(lo, hi) => v.max(lo).min(hi),
            Act::Sigmoid => sigmoid(v),
            Act::Tanh => v.tanh(),
            Act::LeakyRelu(a) => leaky_relu(a, v).0,
        }
    }

    /// In place over `v` (one loop per kind, so each vectorizes).
    pub fn apply(self, v: &mut [f32]) {
        match self {
            // As compare-and-select (NaN gives the bound, as `f32::max`/`min` do), which
            // vectorizes in wasm; `f32::max` there is a scalar NaN-checking sequence.
            Act::Relu => v
                .iter_mut()
                .for_each(|x| *x = if *x > 0.0 { *x } else { 0.0 }),
            Act::Clip(lo, hi) if !lo.is_nan() && !hi.is_nan() => v.iter_mut().for_each(|x| {
                let y = if *x >= lo { *x } else { lo };
                *x = if y <= hi { y } else { hi };
            }),
            _ => v.iter_mut().for_each(|x| *x = self.one(*x)),
        }
    }
}

/// The readers of every value of `g` (node inputs and graph outputs).
fn readers(g: &Graph) -> std::collections::HashMap<&str, usize> {
    let mut r = std::collections::HashMap::new();
    for name in g
        .nodes
        .iter()
        .flat_map(|n| n.inputs.iter())
        .chain(g.outputs.iter())
    {
        *r.entry(name.as_str()).or_insert(0) += 1;
    }
    r
}

/// Moves every activation whose input is the only output of a `Conv` or `Gemm` read by nothing
/// else into that node: the node takes the activation's output name and the activation node is
/// removed. Returns, per node of the rewritten graph, the activation it now ends with.
pub fn fuse_activations(g: &mut Graph) -> Vec<Option<Act>> {
    let mut acts: Vec<Option<Act>> = vec![None; g.nodes.len()];
    let mut remove = vec![false; g.nodes.len()];
    {
        let readers = readers(g);
        let producer: std::collections::HashMap<&str, usize> = g
            .nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.outputs.iter().map(move |o| (o.as_str(), i)))
            .collect();
        let mut renames: Vec<(usize, usize)> = Vec::new();
        for (j, n) in g.nodes.iter().enumerate() {
            let (Some(act), [x], [_]) = (Act::of(&n.op), n.inputs.as_slice(), n.outputs.as_slice())
            else {
                continue;
            };
            let Some(&i) = producer.get(x.as_str()) else {
                continue;
            };
            let p = &g.nodes[i];
            if i < j
                && matches!(p.op, Op::Conv(_) | Op::Gemm(_))
                && p.outputs.len() == 1
                && acts[i].is_none()
                && readers.get(x.as_str()) == Some(&1)
            {
                acts[i] = Some(act);
                remove[j] = true;
                renames.push((i, j));
            }
        }
        for (i, j) in renames {
            g.nodes[i].outputs = g.nodes[j].outputs.clone();
        }
    }
    let mut keep = remove.iter().map(|r| !r);
    g.nodes.retain(|_| keep.next().unwrap_or(true));
    let mut keep = remove.iter().map(|r| !r);
    acts.retain(|_| keep.next().unwrap_or(true));
    acts
}

/// For a tensor of shape `small` broadcast (numpy rules) to `out`: `Some((inner, len))` when
/// its value at flat output index `i` is `small[(i / inner) % len]`, i.e. its dimensions other
/// than 1 (right-aligned) form one run equal to `out`'s there — a bias row (`[n]` on
/// `[m, n]`), a per-channel bias (`[C, 1, 1]` on `[N, C, H, W]`), a scalar or the same shape.
/// Pure.
pub fn repeat_pattern(out: &[usize], small: &[usize]) -> Option<(usize, usize)> {
    if small.len() > out.len() {
        return None;
    }
    let off = out.len() - small.len();
    let Some(lo) = small.iter().position(|&d| d != 1) else {
        return Some((1, 1));
    };
    let hi = small.iter().rposition(|&d| d != 1).map_or(lo, |h| h + 1);
    if (lo..hi).any(|j| small[j] != out[off + j]) {
        return None;
    }
    let inner = out[off + hi..].iter().product::<usize>();
    let len = small[lo..hi].iter().product::<usize>();
    Some((inner, len))
}

/// `y[i] += small[(i / inner) % len]` (see [`repeat_pattern`]).
fn add_repeated(y: &mut [f32], small: &[f32], inner: usize, len: usize) {
    if inner == 0 || len == 0 || small.len() < len {
        return;
    }
    if inner == 1 {
        for row in y.chunks_exact_mut(len) {
            for (v, s) in row.iter_mut().zip(small) {
                *v += s;
            }
        }
    } else {
        for (c, chunk) in y.chunks_exact_mut(inner).enumerate() {
            let s = small[c % len];
            chunk.iter_mut().for_each(|v| *v += s);
        }
    }
}

fn tensor(shape: &[usize], v: Vec<f32>) -> Result<Tensor> {
    Tensor::from_shape_vec(ndarray::IxDyn(shape), v).map_err(|e| Error::Invalid(e.to_string()))
}

/// `t` in standard layout with its values as a mutable slice.
fn standard(t: Tensor) -> Tensor {
    crate::tensor::into_standard(t)
}

/// `act(x)`: in `owned` (the input's own buffer, when it dies here) or into a pooled buffer.
pub(super) fn activation(
    act: Act,
    owned: Option<Tensor>,
    x: Option<&Tensor>,
    pool: &mut super::Pool,
) -> Result<Tensor> {
    if let Some(t) = owned {
        let mut t = standard(t);
        if let Some(s) = t.as_slice_mut() {
            act.apply(s);
            return Ok(t);
        }
        t.mapv_inplace(|v| act.one(v));
        return Ok(t);
    }
    let x = x.ok_or_else(|| Error::Graph("activation: missing input".into()))?;
    let xs = crate::tensor::to_contiguous(x);
    let mut y = pool.take_empty(xs.len());
    y.extend(xs.iter().map(|&v| act.one(v)));
    tensor(x.shape(), y)
}

/// For `Add(a, b)` with shapes `sa`, `sb`: the input with the output's shape and the
/// [`repeat_pattern`] of the other, or `None` (the reference op runs). Pure.
pub fn add_plan(sa: &[usize], sb: &[usize]) -> Option<(usize, usize, usize)> {
    let out = crate::ops::broadcast_shape(sa, sb)?;
    if out == sa {
        let (inner, len) = repeat_pattern(&out, sb)?;
        Some((0, inner, len))
    } else if out == sb {
        let (inner, len) = repeat_pattern(&out, sa)?;
        Some((1, inner, len))
    } else {
        None
    }
}

/// `big + small` where `small` repeats as `(inner, len)` ([`repeat_pattern`]): in `owned` (the
/// big input's own buffer, when it dies here) or into a pooled copy of `big`.
pub(super) fn add(
    owned: Option<Tensor>,
    big: Option<&Tensor>,
    small: &Tensor,
    (inner, len): (usize, usize),
    pool: &mut super::Pool,
) -> Result<Tensor> {
    let mut y = match (owned, big) {
        (Some(t), _) => standard(t),
        (None, Some(bt)) => {
            let bv = crate::tensor::to_contiguous(bt);
            let mut v = pool.take_empty(bv.len());
            v.extend_from_slice(&bv);
            tensor(bt.shape(), v)?
        }
        (None, None) => return Err(Error::Graph("add: missing input".into())),
    };
    let sv = crate::tensor::to_contiguous(small);
    let ys = y
        .as_slice_mut()
        .ok_or_else(|| Error::Invalid("add: output not contiguous".into()))?;
    add_repeated(ys, &sv, inner, len);
    Ok(y)
}

/// Whether the packed statistics (`c` channels) apply to an input of `shape`.
pub(super) fn batch_norm_applies(c: usize, shape: &[usize]) -> bool {
    c > 0 && shape.len() >= 2 && shape[1] == c
}

/// Inference batch norm as `x·k + off` per channel (axis 1), `k` and `off` computed at plan
/// time exactly as the reference computes them (the caller checks [`batch_norm_applies`]).
pub(super) fn batch_norm(
    k: &[f32],
    off: &[f32],
    owned: Option<Tensor>,
    x: Option<&Tensor>,
    pool: &mut super::Pool,
) -> Result<Tensor> {
    let mut y = match (owned, x) {
        (Some(t), _) => standard(t),
        (None, Some(x)) => {
            let xs = crate::tensor::to_contiguous(x);
            let mut v = pool.take_empty(xs.len());
            v.extend_from_slice(&xs);
            tensor(x.shape(), v)?
        }
        (None, None) => return Err(Error::Graph("batchnorm: missing input".into())),
    };
    let c = k.len();
    if !batch_norm_applies(c, y.shape()) || off.len() != c {
        return Err(Error::Invalid("batchnorm: channel count differs".into()));
    }
    let sp: usize = y.shape()[2..].iter().product();
    let ys = y
        .as_slice_mut()
        .ok_or_else(|| Error::Invalid("batchnorm: output not contiguous".into()))?;
    if sp > 0 {
        for (i, plane) in ys.chunks_exact_mut(sp).enumerate() {
            let (kc, oc) = (k[i % c], off[i % c]);
            plane.iter_mut().for_each(|v| *v = *v * kc + oc);
        }
    }
    Ok(y)
}

/// `k = s / √(v + ε)` and `off = b − m·k` per channel, as the reference computes them, when the
/// four statistics of `n` are constants of one length.
pub(super) fn batch_norm_constants(g: &Graph, n: &Node) -> Option<(Vec<f32>, Vec<f32>)> {
    let Op::BatchNorm { epsilon, .. } = n.op else {
        return None;
    };
    let stats: Vec<&Tensor> = (1..5)
        .map(|i| n.inputs.get(i).and_then(|s| g.weights.get(s)))
        .collect::<Option<_>>()?;
    let c = stats[0].len();
    if stats.iter().any(|t| t.ndim() != 1 || t.len() != c) || n.outputs.len() != 1 {
        return None;
    }
    let v = |i: usize| crate::tensor::to_contiguous(stats[i]).into_owned();
    let (s, b, m, var) = (v(0), v(1), v(2), v(3));
    let k: Vec<f32> = (0..c).map(|i| s[i] / (var[i] + epsilon).sqrt()).collect();
    let off: Vec<f32> = (0..c).map(|i| b[i] - m[i] * k[i]).collect();
    Some((k, off))
}

/// A shape-only op (Flatten, Reshape, Squeeze, Unsqueeze, Dropout at inference): the input's
/// buffer under the new shape when it dies here (no copy), else a pooled copy.
pub(super) fn view(
    n: &Node,
    owned: Option<Tensor>,
    x: Option<&Tensor>,
    pool: &mut super::Pool,
) -> Result<Tensor> {
    let in_shape: Vec<usize> = match (&owned, x) {
        (Some(t), _) => t.shape().to_vec(),
        (None, Some(x)) => x.shape().to_vec(),
        (None, None) => return Err(Error::Graph(format!("node `{}` has no input", n.name))),
    };
    let shape = match n.op {
        Op::Dropout { .. } => in_shape.clone(),
        _ => crate::ops::infer_shape(n, &[Some(&in_shape)])?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Graph(format!("node `{}` has no output shape", n.name)))?,
    };
    let t = match (owned, x) {
        (Some(t), _) => standard(t),
        (None, Some(x)) => {
            let xs = crate::tensor::to_contiguous(x);
            let mut v = pool.take_empty(xs.len());
            v.extend_from_slice(&xs);
            tensor(&in_shape, v)?
        }
        (None, None) => return Err(Error::Graph(format!("node `{}` has no input", n.name))),
    };
    t.into_shape_with_order(ndarray::IxDyn(&shape))
        .map_err(|_| {
            Error::shape(
                &n.name,
                n.op.name(),
                "element counts differ",
                &[&in_shape, &shape],
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeat_patterns() {
        assert_eq!(repeat_pattern(&[4, 5], &[4, 5]), Some((1, 20)));
        assert_eq!(repeat_pattern(&[4, 5], &[5]), Some((1, 5)));
        assert_eq!(repeat_pattern(&[4, 5], &[1, 5]), Some((1, 5)));
        assert_eq!(repeat_pattern(&[2, 3, 4, 5], &[3, 1, 1]), Some((20, 3)));
        assert_eq!(repeat_pattern(&[2, 3, 4, 5], &[1, 3, 4, 1]), Some((5, 12)));
        assert_eq!(repeat_pattern(&[2, 3], &[]), Some((1, 1)));
        assert_eq!(repeat_pattern(&[2, 3], &[1, 1]), Some((1, 1)));
        // A 1 inside the run: two blocks, not one.
        assert_eq!(repeat_pattern(&[2, 3, 4], &[2, 1, 4]), None);
        assert_eq!(repeat_pattern(&[3], &[2, 3]), None);
        assert_eq!(repeat_pattern(&[3, 4], &[2]), None);
        // Empty outputs.
        assert_eq!(repeat_pattern(&[0, 4], &[4]), Some((1, 4)));
        assert_eq!(add_plan(&[2, 3], &[3]), Some((0, 1, 3)));
        assert_eq!(add_plan(&[3, 1, 1], &[2, 3, 4, 4]), Some((1, 16, 3)));
        assert_eq!(add_plan(&[2, 1], &[1, 3]), None);
        assert_eq!(add_plan(&[2, 3], &[4]), None);
    }

    #[test]
    fn activations_match_the_reference_ops_bit_for_bit() {
        let xs = [
            -3.5f32,
            -0.0,
            0.0,
            1e-30,
            2.5,
            90.0,
            -90.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        let x = crate::tensor::from_vec(&[2, 5], xs.to_vec()).unwrap();
        for op in [
            Op::Relu,
            Op::Clip {
                min: -1.0,
                max: 6.0,
            },
            Op::Clip { min: 0.0, max: 0.0 },
            Op::Sigmoid,
            Op::Tanh,
            Op::LeakyRelu { alpha: 0.1 },
        ] {
            let n = Node::new("y", op.clone(), &["x"]);
            let want = crate::ops::forward(&n, &[Some(&x)], crate::ops::Mode::Eval)
                .unwrap()
                .0
                .remove(0);
            let act = Act::of(&op).unwrap();
            let mut pool = super::super::Pool::default();
            let a = activation(act, None, Some(&x), &mut pool).unwrap();
            let b = activation(act, Some(x.clone()), None, &mut pool).unwrap();
            for got in [a, b] {
                assert_eq!(got.shape(), want.shape());
                for (g, w) in got.iter().zip(want.iter()) {
                    assert_eq!(g.to_bits(), w.to_bits(), "{op:?}");
                }
            }
        }
        assert_eq!(
            Act::of(&Op::Softmax {
                axis: 1,
                coerce_2d: false
            }),
            None
        );
    }
}

//! Flatten, Reshape and Concat.

use super::norm_axis;
use crate::graph::Node;
use crate::tensor::Tensor;
use crate::{Error, Result};
use ndarray::{Axis, IxDyn};

pub(super) fn flatten_shape(node: &Node, axis: i64, s: &[usize]) -> Result<Vec<usize>> {
    let r = s.len() as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a > r {
        return Err(Error::Attribute {
            node: node.name.clone(),
            op: "Flatten",
            attr: "axis",
            detail: format!("{axis} out of range for rank {r}"),
        });
    }
    let a = a as usize;
    Ok(vec![s[..a].iter().product(), s[a..].iter().product()])
}

pub(super) fn reshape_shape(node: &Node, target: &[i64], s: &[usize]) -> Result<Vec<usize>> {
    let total: usize = s.iter().product();
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 => out.push(*s.get(i).ok_or_else(|| {
                Error::shape(
                    &node.name,
                    "Reshape",
                    format!("0 at position {i} copies a dim the input lacks"),
                    &[s],
                )
            })?),
            t if t > 0 => out.push(t as usize),
            _ => {
                return Err(Error::Attribute {
                    node: node.name.clone(),
                    op: "Reshape",
                    attr: "shape",
                    detail: format!("invalid target {target:?}"),
                });
            }
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(Error::shape(
                &node.name,
                "Reshape",
                format!("cannot infer -1 in {target:?}"),
                &[s],
            ));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(Error::shape(
            &node.name,
            "Reshape",
            format!("target {target:?} has {known} elements, input has {total}"),
            &[s],
        ));
    }
    Ok(out)
}

pub(super) fn reshape_to(node: &Node, x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    crate::tensor::into_standard(x.clone())
        .into_shape_with_order(IxDyn(shape))
        .map_err(|_| {
            Error::shape(
                &node.name,
                node.op.name(),
                "element counts differ",
                &[x.shape(), shape],
            )
        })
}

pub(super) fn concat_shape(node: &Node, axis: i64, shapes: &[&[usize]]) -> Result<Vec<usize>> {
    let first = shapes
        .first()
        .ok_or_else(|| Error::Graph(format!("Concat `{}` has no inputs", node.name)))?;
    let a = norm_axis(node, axis, first.len(), "axis")?;
    let mut out = first.to_vec();
    out[a] = 0;
    for s in shapes {
        if s.len() != first.len() || s.iter().enumerate().any(|(i, d)| i != a && *d != first[i]) {
            return Err(Error::shape(
                &node.name,
                "Concat",
                format!("inputs differ outside axis {a}"),
                shapes,
            ));
        }
        out[a] += s[a];
    }
    Ok(out)
}

pub(super) fn concat(node: &Node, axis: i64, xs: &[&Tensor]) -> Result<Tensor> {
    let shapes: Vec<&[usize]> = xs.iter().map(|t| t.shape()).collect();
    concat_shape(node, axis, &shapes)?;
    let a = norm_axis(node, axis, shapes[0].len(), "axis")?;
    let views: Vec<_> = xs.iter().map(|t| t.view()).collect();
    ndarray::concatenate(Axis(a), &views).map_err(|e| Error::Invalid(e.to_string()))
}

pub(super) fn concat_backward(
    node: &Node,
    axis: i64,
    xs: &[&Tensor],
    dy: &Tensor,
) -> Result<Vec<Tensor>> {
    let a = norm_axis(node, axis, dy.ndim(), "axis")?;
    let mut start = 0;
    let mut out = Vec::with_capacity(xs.len());
    for x in xs {
        let len = x.shape()[a];
        out.push(
            dy.slice_axis(Axis(a), ndarray::Slice::from(start..start + len))
                .to_owned(),
        );
        start += len;
    }
    Ok(out)
}

fn attr_err(node: &Node, attr: &'static str, detail: String) -> Error {
    Error::Attribute {
        node: node.name.clone(),
        op: node.op.name(),
        attr,
        detail,
    }
}

/// The permutation of a Transpose for a given rank (empty `perm` reverses the axes).
pub(super) fn transpose_perm(node: &Node, perm: &[usize], rank: usize) -> Result<Vec<usize>> {
    if perm.is_empty() {
        return Ok((0..rank).rev().collect());
    }
    let mut seen = vec![false; rank];
    for &p in perm {
        match seen.get_mut(p) {
            Some(s) if !*s => *s = true,
            _ => {
                return Err(attr_err(
                    node,
                    "perm",
                    format!("{perm:?} is not a permutation of the {rank} axes"),
                ));
            }
        }
    }
    if perm.len() != rank {
        return Err(attr_err(
            node,
            "perm",
            format!("{perm:?} is not a permutation of the {rank} axes"),
        ));
    }
    Ok(perm.to_vec())
}

pub(super) fn transpose_shape(node: &Node, perm: &[usize], s: &[usize]) -> Result<Vec<usize>> {
    Ok(transpose_perm(node, perm, s.len())?
        .iter()
        .map(|&p| s[p])
        .collect())
}

pub(super) fn transpose(node: &Node, perm: &[usize], x: &Tensor) -> Result<Tensor> {
    let p = transpose_perm(node, perm, x.ndim())?;
    Ok(crate::tensor::into_standard(
        x.clone().permuted_axes(IxDyn(&p)),
    ))
}

/// The gradient of a Transpose: `dy` permuted back.
pub(super) fn transpose_backward(node: &Node, perm: &[usize], dy: &Tensor) -> Result<Tensor> {
    let p = transpose_perm(node, perm, dy.ndim())?;
    let mut inv = vec![0; p.len()];
    for (i, &q) in p.iter().enumerate() {
        inv[q] = i;
    }
    Ok(crate::tensor::into_standard(
        dy.clone().permuted_axes(IxDyn(&inv)),
    ))
}

/// Normalises a list of axes against `rank`, refusing out-of-range and repeated ones.
fn axes_set(node: &Node, axes: &[i64], rank: usize) -> Result<Vec<bool>> {
    let mut set = vec![false; rank];
    for &a in axes {
        let i = norm_axis(node, a, rank, "axes")?;
        if std::mem::replace(&mut set[i], true) {
            return Err(attr_err(node, "axes", format!("axis {a} is repeated")));
        }
    }
    Ok(set)
}

pub(super) fn squeeze_shape(node: &Node, axes: &[i64], s: &[usize]) -> Result<Vec<usize>> {
    if axes.is_empty() {
        return Ok(s.iter().copied().filter(|&d| d != 1).collect());
    }
    let set = axes_set(node, axes, s.len())?;
    let mut out = Vec::with_capacity(s.len());
    for (i, &d) in s.iter().enumerate() {
        if !set[i] {
            out.push(d);
        } else if d != 1 {
            return Err(Error::shape(
                &node.name,
                "Squeeze",
                format!("axis {i} has size {d}, not 1"),
                &[s],
            ));
        }
    }
    Ok(out)
}

pub(super) fn unsqueeze_shape(node: &Node, axes: &[i64], s: &[usize]) -> Result<Vec<usize>> {
    let rank = s.len() + axes.len();
    if rank > crate::graph::limits::MAX_RANK {
        return Err(Error::shape(
            &node.name,
            "Unsqueeze",
            format!(
                "the output rank {rank} exceeds {}",
                crate::graph::limits::MAX_RANK
            ),
            &[s],
        ));
    }
    let set = axes_set(node, axes, rank)?;
    let mut rest = s.iter();
    Ok(set
        .iter()
        .map(|&new| {
            if new {
                1
            } else {
                rest.next().copied().unwrap_or(1)
            }
        })
        .collect())
}

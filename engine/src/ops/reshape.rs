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

//! Broadcasting elementwise ops.

use crate::graph::Node;
use crate::tensor::Tensor;
use crate::{Error, Result};
use ndarray::{Axis, IxDyn};

/// Numpy broadcast of two shapes, or `None` when they are incompatible.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Sums `g` over the axes along which a tensor of `shape` was broadcast to `g`'s shape.
pub fn reduce_to_shape(g: &Tensor, shape: &[usize]) -> Tensor {
    let mut out = g.clone();
    while out.ndim() > shape.len() {
        out = out.sum_axis(Axis(0));
    }
    for (i, &d) in shape.iter().enumerate() {
        if d == 1 && out.shape()[i] != 1 {
            out = out.sum_axis(Axis(i)).insert_axis(Axis(i));
        }
    }
    out.into_shape_with_order(IxDyn(shape)).unwrap_or_else(|e| {
        // Unreachable for shapes that passed broadcast_shape; keep a non-panicking fallback.
        debug_assert!(false, "reduce_to_shape: {e}");
        crate::tensor::zeros(shape)
    })
}

pub(super) fn add(node: &Node, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let shape = broadcast_shape(a.shape(), b.shape()).ok_or_else(|| {
        Error::shape(
            &node.name,
            "Add",
            "shapes do not broadcast",
            &[a.shape(), b.shape()],
        )
    })?;
    if a.shape() == shape.as_slice() {
        return Ok(a + b);
    }
    let ab = a
        .broadcast(IxDyn(&shape))
        .ok_or_else(|| Error::shape(&node.name, "Add", "broadcast", &[a.shape(), b.shape()]))?;
    Ok(&ab + b)
}

/// The binary arithmetic ops.
#[derive(Clone, Copy)]
pub(super) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

/// `a ∘ b` with numpy broadcasting (IEEE semantics, so `x / 0` is ±inf or NaN).
pub(super) fn binary(node: &Node, op: Arith, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if let Arith::Add = op {
        return add(node, a, b);
    }
    let shape = broadcast_shape(a.shape(), b.shape()).ok_or_else(|| {
        Error::shape(
            &node.name,
            node.op.name(),
            "shapes do not broadcast",
            &[a.shape(), b.shape()],
        )
    })?;
    let bad = || {
        Error::shape(
            &node.name,
            node.op.name(),
            "broadcast",
            &[a.shape(), b.shape()],
        )
    };
    let ab = a.broadcast(IxDyn(&shape)).ok_or_else(bad)?;
    let bb = b.broadcast(IxDyn(&shape)).ok_or_else(bad)?;
    let f = match op {
        Arith::Add => |x: f32, y: f32| x + y,
        Arith::Sub => |x: f32, y: f32| x - y,
        Arith::Mul => |x: f32, y: f32| x * y,
        Arith::Div => |x: f32, y: f32| x / y,
    };
    Ok(ndarray::Zip::from(&ab)
        .and(&bb)
        .map_collect(|&x, &y| f(x, y)))
}

/// Gradients of `a ∘ b` for both inputs, summed back over broadcast axes.
pub(super) fn binary_backward(
    node: &Node,
    op: Arith,
    a: &Tensor,
    b: &Tensor,
    dy: &Tensor,
) -> Result<Vec<Option<Tensor>>> {
    let shape = dy.shape().to_vec();
    let bad = || {
        Error::shape(
            &node.name,
            node.op.name(),
            "gradient does not match the broadcast shape",
            &[a.shape(), b.shape(), dy.shape()],
        )
    };
    let ab = a.broadcast(IxDyn(&shape)).ok_or_else(bad)?;
    let bb = b.broadcast(IxDyn(&shape)).ok_or_else(bad)?;
    let (ga, gb): (Tensor, Tensor) = match op {
        Arith::Add => (dy.clone(), dy.clone()),
        Arith::Sub => (dy.clone(), dy.mapv(|g| -g)),
        Arith::Mul => (
            ndarray::Zip::from(dy).and(&bb).map_collect(|&g, &y| g * y),
            ndarray::Zip::from(dy).and(&ab).map_collect(|&g, &x| g * x),
        ),
        Arith::Div => (
            ndarray::Zip::from(dy).and(&bb).map_collect(|&g, &y| g / y),
            ndarray::Zip::from(dy)
                .and(&ab)
                .and(&bb)
                .map_collect(|&g, &x, &y| -g * x / (y * y)),
        ),
    };
    Ok(vec![
        Some(reduce_to_shape(&ga, a.shape())),
        Some(reduce_to_shape(&gb, b.shape())),
    ])
}

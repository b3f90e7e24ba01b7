//! Reference implementations of every operator: shape rules, the f32 forward (the oracle every
//! fast kernel is tested against) and the backward used by training. One file per op family.

pub(crate) mod activation;
pub(crate) mod conv;
mod elementwise;
mod linear;
mod norm;
mod pad;
mod pool;
mod quant;
mod reshape;

pub(crate) use pool::max_pool_eval;
#[cfg(feature = "gpu")]
pub(crate) use quant::finish_matmul as finish_int_matmul;
pub(crate) use quant::{
    Prepared as PreparedInt8, packed_matmul_applies, weight_slots as int8_weight_slots,
};

pub use elementwise::{broadcast_shape, reduce_to_shape};

use elementwise::Arith;

use crate::graph::{Node, Op};
use crate::rng::Rng;
use crate::tensor::Tensor;
use crate::{Error, Result};

/// What a training-mode forward keeps for the backward pass.
#[derive(Debug, Clone, Default)]
pub enum Saved {
    /// Nothing beyond inputs and outputs.
    #[default]
    None,
    /// Dropout mask, already scaled by `1 / (1 − ratio)`.
    Mask(Tensor),
    /// Flat input index of each max-pool output.
    ArgMax(Vec<usize>),
    /// Batch-norm statistics of this batch.
    BatchNorm {
        /// Normalised input.
        xhat: Tensor,
        /// `1 / sqrt(var + eps)` per channel.
        inv_std: Vec<f32>,
        /// Batch mean per channel.
        mean: Vec<f32>,
        /// Unbiased batch variance per channel (for the running statistics).
        var: Vec<f32>,
    },
}

/// Execution mode of a forward pass.
pub enum Mode<'a> {
    /// Inference: dropout off, batch-norm uses running statistics.
    Eval,
    /// Training: dropout draws from the generator, batch-norm uses batch statistics.
    Train(&'a mut Rng),
}

pub(crate) fn get<'a>(node: &Node, inputs: &[Option<&'a Tensor>], i: usize) -> Result<&'a Tensor> {
    inputs.get(i).copied().flatten().ok_or_else(|| {
        Error::Graph(format!(
            "node `{}` ({}) is missing input #{i}",
            node.name,
            node.op.name()
        ))
    })
}

pub(crate) fn opt<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Option<&'a Tensor> {
    inputs.get(i).copied().flatten()
}

/// Resolves a possibly negative axis against a rank.
pub(crate) fn norm_axis(node: &Node, axis: i64, rank: usize, attr: &'static str) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r.max(1) {
        return Err(Error::Attribute {
            node: node.name.clone(),
            op: node.op.name(),
            attr,
            detail: format!("axis {axis} is out of range for rank {rank}"),
        });
    }
    Ok(a as usize)
}

/// Output shapes of `node` given its input shapes (absent optional inputs are `None`).
pub fn infer_shape(node: &Node, shapes: &[Option<&[usize]>]) -> Result<Vec<Vec<usize>>> {
    let need = |i: usize| -> Result<&[usize]> {
        shapes.get(i).copied().flatten().ok_or_else(|| {
            Error::Graph(format!(
                "node `{}` ({}) is missing input #{i}",
                node.name,
                node.op.name()
            ))
        })
    };
    let out = match &node.op {
        Op::Gemm(a) => linear::gemm_shape(
            node,
            a,
            need(0)?,
            need(1)?,
            shapes.get(2).copied().flatten(),
        )?,
        Op::MatMul => linear::matmul_shape(node, need(0)?, need(1)?)?,
        Op::Conv(a) => conv::conv_shape(
            node,
            a,
            need(0)?,
            need(1)?,
            shapes.get(2).copied().flatten(),
        )?,
        Op::MaxPool(a) | Op::AvgPool(a) => pool::pool_shape(node, a, need(0)?)?,
        Op::GlobalAvgPool => pool::global_shape(node, need(0)?)?,
        Op::BatchNorm { .. } => norm::bn_shape(node, shapes)?,
        Op::Relu
        | Op::Clip { .. }
        | Op::Sigmoid
        | Op::Tanh
        | Op::Dropout { .. }
        | Op::LeakyRelu { .. }
        | Op::HardSigmoid { .. }
        | Op::HardSwish
        | Op::Sign
        | Op::Round
        | Op::Gelu { .. } => need(0)?.to_vec(),
        Op::Softmax { axis, .. } | Op::LogSoftmax { axis, .. } => {
            let s = need(0)?;
            norm_axis(node, *axis, s.len(), "axis")?;
            s.to_vec()
        }
        Op::Flatten { axis } => reshape::flatten_shape(node, *axis, need(0)?)?,
        Op::Reshape { shape } => reshape::reshape_shape(node, shape, need(0)?)?,
        Op::Add | Op::Sub | Op::Mul | Op::Div => {
            let (a, b) = (need(0)?, need(1)?);
            broadcast_shape(a, b).ok_or_else(|| {
                Error::shape(
                    &node.name,
                    node.op.name(),
                    "shapes do not broadcast",
                    &[a, b],
                )
            })?
        }
        Op::Transpose { perm } => reshape::transpose_shape(node, perm, need(0)?)?,
        Op::Squeeze { axes } => reshape::squeeze_shape(node, axes, need(0)?)?,
        Op::Unsqueeze { axes } => reshape::unsqueeze_shape(node, axes, need(0)?)?,
        Op::GlobalMaxPool => pool::global_shape(node, need(0)?)?,
        Op::Pad(a) => pad::pad_shape(node, a, need(0)?)?,
        Op::LayerNorm { axis, .. } => {
            need(1)?;
            // Three outputs: Y, Mean, InvStdDev.
            return norm::ln_shape(node, *axis, shapes);
        }
        Op::Concat { axis } => {
            let all: Result<Vec<&[usize]>> = (0..node.inputs.len()).map(need).collect();
            reshape::concat_shape(node, *axis, &all?)?
        }
        Op::QuantizeLinear { .. }
        | Op::DequantizeLinear { .. }
        | Op::DynamicQuantizeLinear
        | Op::QLinearConv { .. }
        | Op::QLinearMatMul { .. }
        | Op::MatMulInteger { .. }
        | Op::ConvInteger { .. }
        | Op::Cast { .. } => return quant::quant_shape(node, shapes),
    };
    Ok(vec![out])
}

fn unary(x: &Tensor, f: impl Fn(f32) -> (f32, f32)) -> Tensor {
    x.mapv(|v| f(v).0)
}

fn unary_backward(x: &Tensor, dy: &Tensor, f: impl Fn(f32) -> (f32, f32)) -> Tensor {
    ndarray::Zip::from(dy)
        .and(x)
        .map_collect(|&g, &v| g * f(v).1)
}

fn arith(op: &Op) -> Option<Arith> {
    match op {
        Op::Add => Some(Arith::Add),
        Op::Sub => Some(Arith::Sub),
        Op::Mul => Some(Arith::Mul),
        Op::Div => Some(Arith::Div),
        _ => None,
    }
}

/// Runs one node. Returns its outputs and what the backward pass needs.
pub fn forward(
    node: &Node,
    inputs: &[Option<&Tensor>],
    mode: Mode<'_>,
) -> Result<(Vec<Tensor>, Saved)> {
    let x = get(node, inputs, 0)?;
    let (y, saved) = match &node.op {
        Op::Gemm(a) => (
            linear::gemm(node, a, x, get(node, inputs, 1)?, opt(inputs, 2))?,
            Saved::None,
        ),
        Op::MatMul => (linear::matmul(node, x, get(node, inputs, 1)?)?, Saved::None),
        Op::Conv(a) => (
            conv::conv(node, a, x, get(node, inputs, 1)?, opt(inputs, 2))?,
            Saved::None,
        ),
        Op::MaxPool(a) => {
            let (y, idx) = pool::max_pool(node, a, x)?;
            (y, Saved::ArgMax(idx))
        }
        Op::AvgPool(a) => (pool::avg_pool(node, a, x)?, Saved::None),
        Op::GlobalAvgPool => (pool::global_avg_pool(node, x)?, Saved::None),
        Op::BatchNorm { epsilon, .. } => {
            let (s, b) = (get(node, inputs, 1)?, get(node, inputs, 2)?);
            let (m, v) = (get(node, inputs, 3)?, get(node, inputs, 4)?);
            match mode {
                Mode::Eval => (norm::bn_eval(node, *epsilon, x, s, b, m, v)?, Saved::None),
                Mode::Train(_) => norm::bn_train(node, *epsilon, x, s, b)?,
            }
        }
        Op::Relu => (x.mapv(|v| v.max(0.0)), Saved::None),
        Op::Clip { min, max } => (x.mapv(|v| v.max(*min).min(*max)), Saved::None),
        Op::Sigmoid => (x.mapv(activation::sigmoid), Saved::None),
        Op::Tanh => (x.mapv(f32::tanh), Saved::None),
        Op::Softmax { axis, coerce_2d } => (
            activation::softmax(node, x, *axis, *coerce_2d, false)?,
            Saved::None,
        ),
        Op::LogSoftmax { axis, coerce_2d } => (
            activation::softmax(node, x, *axis, *coerce_2d, true)?,
            Saved::None,
        ),
        Op::Flatten { axis } => (
            reshape::reshape_to(node, x, &reshape::flatten_shape(node, *axis, x.shape())?)?,
            Saved::None,
        ),
        Op::Reshape { shape } => (
            reshape::reshape_to(node, x, &reshape::reshape_shape(node, shape, x.shape())?)?,
            Saved::None,
        ),
        Op::Add | Op::Sub | Op::Mul | Op::Div => {
            let k = arith(&node.op).unwrap_or(Arith::Add);
            (
                elementwise::binary(node, k, x, get(node, inputs, 1)?)?,
                Saved::None,
            )
        }
        Op::LeakyRelu { alpha } => (unary(x, |v| activation::leaky_relu(*alpha, v)), Saved::None),
        Op::HardSigmoid { alpha, beta } => (
            unary(x, |v| activation::hard_sigmoid(*alpha, *beta, v)),
            Saved::None,
        ),
        Op::HardSwish => (unary(x, activation::hard_swish), Saved::None),
        Op::Sign => (unary(x, activation::sign_ste), Saved::None),
        Op::Round => (unary(x, activation::round_ste), Saved::None),
        Op::Gelu { tanh } => (unary(x, |v| activation::gelu(*tanh, v)), Saved::None),
        Op::Transpose { perm } => (reshape::transpose(node, perm, x)?, Saved::None),
        Op::Squeeze { axes } => (
            reshape::reshape_to(node, x, &reshape::squeeze_shape(node, axes, x.shape())?)?,
            Saved::None,
        ),
        Op::Unsqueeze { axes } => (
            reshape::reshape_to(node, x, &reshape::unsqueeze_shape(node, axes, x.shape())?)?,
            Saved::None,
        ),
        Op::GlobalMaxPool => {
            let (y, idx) = pool::global_max_pool(node, x)?;
            (y, Saved::ArgMax(idx))
        }
        Op::Pad(a) => (pad::pad(node, a, x)?, Saved::None),
        Op::LayerNorm { axis, epsilon } => {
            // Three outputs: Y, Mean, InvStdDev.
            let outs = norm::layer_norm(
                node,
                *axis,
                *epsilon,
                x,
                get(node, inputs, 1)?,
                opt(inputs, 2),
            )?;
            return Ok((outs, Saved::None));
        }
        Op::Concat { axis } => {
            let all: Result<Vec<&Tensor>> = (0..node.inputs.len())
                .map(|i| get(node, inputs, i))
                .collect();
            (reshape::concat(node, *axis, &all?)?, Saved::None)
        }
        Op::Dropout { ratio } => match mode {
            Mode::Train(rng) if *ratio > 0.0 => {
                let keep = 1.0 - ratio;
                let mask = x.mapv(|_| {
                    if rng.uniform() < keep {
                        1.0 / keep
                    } else {
                        0.0
                    }
                });
                (x * &mask, Saved::Mask(mask))
            }
            _ => (x.clone(), Saved::None),
        },
        Op::QuantizeLinear { .. }
        | Op::DequantizeLinear { .. }
        | Op::DynamicQuantizeLinear
        | Op::QLinearConv { .. }
        | Op::QLinearMatMul { .. }
        | Op::MatMulInteger { .. }
        | Op::ConvInteger { .. }
        | Op::Cast { .. } => return Ok((quant::forward(node, inputs)?, Saved::None)),
    };
    Ok((vec![y], saved))
}

/// Gradients of `node`'s inputs given the gradient of its (first) output. Entries are `None` for
/// inputs that need no gradient (absent, integer-like or statistics).
pub fn backward(
    node: &Node,
    inputs: &[Option<&Tensor>],
    output: &Tensor,
    saved: &Saved,
    dy: &Tensor,
) -> Result<Vec<Option<Tensor>>> {
    let x = get(node, inputs, 0)?;
    let g = match &node.op {
        Op::Gemm(a) => linear::gemm_backward(a, x, get(node, inputs, 1)?, opt(inputs, 2), dy)?,
        Op::MatMul => linear::matmul_backward(node, x, get(node, inputs, 1)?, dy)?,
        Op::Conv(a) => conv::conv_backward(
            node,
            a,
            x,
            get(node, inputs, 1)?,
            opt(inputs, 2).is_some(),
            dy,
        )?,
        Op::MaxPool(_) | Op::GlobalMaxPool => match saved {
            Saved::ArgMax(idx) => vec![Some(pool::max_pool_backward(x, idx, dy))],
            _ => {
                return Err(Error::Graph(format!(
                    "{} `{}`: backward without a forward",
                    node.op.name(),
                    node.name
                )));
            }
        },
        Op::AvgPool(a) => vec![Some(pool::avg_pool_backward(node, a, x, dy)?)],
        Op::GlobalAvgPool => vec![Some(pool::global_avg_pool_backward(x, dy))],
        Op::BatchNorm { epsilon, .. } => norm::bn_backward(node, *epsilon, inputs, saved, dy)?,
        Op::Relu => vec![Some(
            ndarray::Zip::from(dy)
                .and(x)
                .map_collect(|&g, &v| if v > 0.0 { g } else { 0.0 }),
        )],
        Op::Clip { min, max } => {
            vec![Some(ndarray::Zip::from(dy).and(x).map_collect(|&g, &v| {
                if v > *min && v < *max { g } else { 0.0 }
            }))]
        }
        Op::Sigmoid => vec![Some(
            ndarray::Zip::from(dy)
                .and(output)
                .map_collect(|&g, &y| g * y * (1.0 - y)),
        )],
        Op::Tanh => vec![Some(
            ndarray::Zip::from(dy)
                .and(output)
                .map_collect(|&g, &y| g * (1.0 - y * y)),
        )],
        Op::Softmax { axis, coerce_2d } => {
            vec![Some(activation::softmax_backward(
                node, output, dy, *axis, *coerce_2d, false,
            )?)]
        }
        Op::LogSoftmax { axis, coerce_2d } => {
            vec![Some(activation::softmax_backward(
                node, output, dy, *axis, *coerce_2d, true,
            )?)]
        }
        Op::Flatten { .. } | Op::Reshape { .. } => {
            vec![Some(reshape::reshape_to(node, dy, x.shape())?)]
        }
        Op::Add => {
            let b = get(node, inputs, 1)?;
            vec![
                Some(reduce_to_shape(dy, x.shape())),
                Some(reduce_to_shape(dy, b.shape())),
            ]
        }
        Op::Sub | Op::Mul | Op::Div => {
            let k = arith(&node.op).unwrap_or(Arith::Add);
            elementwise::binary_backward(node, k, x, get(node, inputs, 1)?, dy)?
        }
        Op::LeakyRelu { alpha } => vec![Some(unary_backward(x, dy, |v| {
            activation::leaky_relu(*alpha, v)
        }))],
        Op::HardSigmoid { alpha, beta } => vec![Some(unary_backward(x, dy, |v| {
            activation::hard_sigmoid(*alpha, *beta, v)
        }))],
        Op::HardSwish => vec![Some(unary_backward(x, dy, activation::hard_swish))],
        Op::Sign => vec![Some(unary_backward(x, dy, activation::sign_ste))],
        Op::Round => vec![Some(unary_backward(x, dy, activation::round_ste))],
        Op::Gelu { tanh } => vec![Some(unary_backward(x, dy, |v| activation::gelu(*tanh, v)))],
        Op::Transpose { perm } => vec![Some(reshape::transpose_backward(node, perm, dy)?)],
        Op::Squeeze { .. } | Op::Unsqueeze { .. } => {
            vec![Some(reshape::reshape_to(node, dy, x.shape())?)]
        }
        Op::Pad(a) => vec![Some(pad::pad_backward(node, a, x, dy)?)],
        Op::LayerNorm { axis, epsilon } => norm::layer_norm_backward(
            node,
            *axis,
            *epsilon,
            x,
            get(node, inputs, 1)?,
            opt(inputs, 2),
            dy,
        )?,
        Op::Concat { axis } => {
            let all: Result<Vec<&Tensor>> = (0..node.inputs.len())
                .map(|i| get(node, inputs, i))
                .collect();
            reshape::concat_backward(node, *axis, &all?, dy)?
                .into_iter()
                .map(Some)
                .collect()
        }
        Op::Dropout { .. } => match saved {
            Saved::Mask(m) => vec![Some(dy * m)],
            _ => vec![Some(dy.clone())],
        },
        Op::QuantizeLinear { .. }
        | Op::DequantizeLinear { .. }
        | Op::DynamicQuantizeLinear
        | Op::QLinearConv { .. }
        | Op::QLinearMatMul { .. }
        | Op::MatMulInteger { .. }
        | Op::ConvInteger { .. }
        | Op::Cast { .. } => return Err(quant::backward(node)),
    };
    Ok(g)
}

#[cfg(test)]
mod tests;

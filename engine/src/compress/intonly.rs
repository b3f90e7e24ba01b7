//! Integer-only int8 inference (Jacob et al. 2018, "Quantization and Training of Neural Networks
//! for Efficient Integer-Arithmetic-Only Inference"): the reference implementation.
//!
//! A float [`Graph`] becomes a [`QGraph`] by
//! 1. folding BatchNorm into the Conv/Gemm before it ([`crate::graph::fold::fold_batchnorm`]),
//!    and moving a ReLU/Clip that follows an unpadded MaxPool in front of it (exact: the max
//!    commutes with a non-decreasing function), so the activation can be fused into the layer;
//! 2. calibrating the real range `[min, max]` of every activation that gets new quantization
//!    parameters (the input, every Conv/Gemm/MatMul output, after its fused ReLU/Clip, and every
//!    Add output) on calibration images ([`Calibration`]);
//! 3. quantizing: activations are int8 asymmetric per tensor (`real = s·(q − z)`, `q ∈ −128..=127`,
//!    the range always contains 0 so padding is exact); weights are int8 symmetric per output
//!    channel (`z = 0`, `q ∈ −127..=127`); biases are int32 with scale `s_in·s_w[c]`; each output
//!    channel's real multiplier `M = s_in·s_w[c] / s_out` is stored as a Q31 fixed-point `M0` in
//!    `[2^30, 2^31)` and a shift (`M = M0·2^−31·2^−shift`). A ReLU or Clip that is the only reader
//!    of a layer's output becomes the requantization clamp.
//!
//! [`QGraph::run`] is a scalar executor that is obviously correct rather than fast: the input is
//! quantized once from f32, every inner loop multiplies `(x − z_x)` by an int8 weight and
//! accumulates in `i32`, requantization is `z_out + RoundingDivideByPOT(SaturatingRoundingDoubling
//! HighMul(acc, M0), shift)` as in gemmlowp, and only the final logits are dequantized.
//! [`QGraph::run_integer`] exposes the pure integer path (int8 in, int8 out) that fast kernels
//! are checked against, and [`QGraph::run_simulated`] is a float twin (fake quantization in f64
//! with the exact real multipliers) for comparison.
//!
//! [`QGraph::encode`] writes the whole model (structure, int8 weights, int32 biases, multipliers,
//! shifts, scales, zero points); its length is the model's byte size.

use crate::data::{Dataset, Preprocess};
use crate::graph::{AutoPad, Graph, Op};
use crate::kernels::int8;
use crate::metrics::EvalReport;
use crate::tensor::{Tensor, checked_numel};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

// ---------------------------------------------------------------------------------------------
// Fixed-point arithmetic (gemmlowp semantics).
// ---------------------------------------------------------------------------------------------

/// `round(a·b / 2^31)` with ties away from zero, saturating the one overflowing case
/// (`a = b = i32::MIN`): gemmlowp's `SaturatingRoundingDoublingHighMul`.
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = a as i64 * b as i64;
    let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// `x / 2^exponent` rounded to nearest, ties away from zero (gemmlowp's `RoundingDivideByPOT`);
/// `exponent` is clamped to `0..=31`.
pub fn rounding_divide_by_pot(x: i32, exponent: u32) -> i32 {
    let e = exponent.min(31);
    let mask: i64 = (1i64 << e) - 1;
    let x = x as i64;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i64::from(x < 0);
    ((x >> e) + i64::from(remainder > threshold)) as i32
}

/// `x · M0·2^−31 · 2^−shift` in integer arithmetic: a saturating left shift when `shift < 0`,
/// then [`saturating_rounding_doubling_high_mul`], then [`rounding_divide_by_pot`] when
/// `shift > 0`. `shift` is clamped to `−31..=31`.
pub fn multiply_by_quantized_multiplier(x: i32, m0: i32, shift: i32) -> i32 {
    let shift = shift.clamp(-31, 31);
    let left = (-shift).max(0) as u32;
    let right = shift.max(0) as u32;
    let x = ((x as i64) << left).clamp(i32::MIN as i64, i32::MAX as i64) as i32;
    rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, m0), right)
}

/// Splits a real multiplier `m ≥ 0` into `(M0, shift)` with `M0 ∈ [2^30, 2^31)` (Q31) and
/// `m ≈ M0·2^−31·2^−shift`, `shift ∈ −31..=31`. Multipliers too small for a shift of 31 are
/// denormalised (smaller `M0`); `0` gives `(0, 0)`; `m ≥ 2^31` or a non-finite `m` is an error.
pub fn quantize_multiplier(m: f64) -> Result<(i32, i32)> {
    if !m.is_finite() || m < 0.0 {
        return Err(Error::Invalid(format!(
            "requantization multiplier {m} is not a finite non-negative number"
        )));
    }
    if m == 0.0 {
        return Ok((0, 0));
    }
    let mut e = m.log2().floor() as i32 + 1;
    let mut q = m / 2f64.powi(e);
    while q >= 1.0 {
        q /= 2.0;
        e += 1;
    }
    while q < 0.5 {
        q *= 2.0;
        e -= 1;
    }
    let mut q_fixed = (q * 2f64.powi(31)).round() as i64;
    if q_fixed == 1i64 << 31 {
        q_fixed /= 2;
        e += 1;
    }
    let mut shift = -e;
    if shift < -31 {
        return Err(Error::Invalid(format!(
            "requantization multiplier {m} is too large"
        )));
    }
    if shift > 31 {
        let extra = shift - 31;
        if extra >= 31 {
            return Ok((0, 0));
        }
        q_fixed = (q_fixed + (1i64 << (extra - 1))) >> extra;
        shift = 31;
    }
    Ok((q_fixed as i32, shift))
}

// ---------------------------------------------------------------------------------------------
// Types.
// ---------------------------------------------------------------------------------------------

/// How activation ranges are estimated from the calibration images.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Calibration {
    /// Smallest and largest value seen over all calibration images.
    #[default]
    #[serde(rename = "minmax")]
    MinMax,
    /// Exponential moving average (momentum 0.9) of the per-batch minimum and maximum over
    /// batches of 32 images, as the paper does during training.
    #[serde(rename = "ema")]
    Ema,
}

/// Knobs of the `int8` pass: `{"pass": "int8", "calibration": 1000, "method": "minmax"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Int8Spec {
    /// Number of calibration images (the first ones of the training data), 1..=100000.
    #[serde(default = "default_calibration")]
    pub calibration: usize,
    /// Range estimator.
    #[serde(default)]
    pub method: Calibration,
}

fn default_calibration() -> usize {
    1000
}

impl Default for Int8Spec {
    fn default() -> Self {
        Int8Spec {
            calibration: default_calibration(),
            method: Calibration::MinMax,
        }
    }
}

impl Int8Spec {
    /// Checks the knobs.
    pub fn check(&self) -> Result<()> {
        if self.calibration == 0 || self.calibration > 100_000 {
            return Err(Error::Invalid(format!(
                "int8 calibration wants 1..=100000 images, got {}",
                self.calibration
            )));
        }
        Ok(())
    }
}

/// Quantization of one activation tensor: `real = scale · (q − zero_point)`, `q` an `i8`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QParams {
    /// Real step between consecutive codes (finite, positive).
    pub scale: f32,
    /// The code that stands for 0.0.
    pub zero_point: i8,
}

impl QParams {
    /// Parameters covering `[min(lo, 0), max(hi, 0)]` with all 256 codes; 0.0 is exact.
    pub fn from_range(lo: f32, hi: f32) -> Result<Self> {
        if !lo.is_finite() || !hi.is_finite() {
            return Err(Error::Invalid(format!(
                "activation range [{lo}, {hi}] is not finite"
            )));
        }
        let (lo, mut hi) = (lo.min(0.0) as f64, hi.max(0.0) as f64);
        if hi - lo < 1e-12 {
            hi = lo + 1.0;
        }
        let scale = (hi - lo) / 255.0;
        let zp = (-128.0 - lo / scale).round().clamp(-128.0, 127.0);
        Ok(QParams {
            scale: scale as f32,
            zero_point: zp as i8,
        })
    }

    /// The code nearest to `v` (saturating).
    pub fn quantize(&self, v: f32) -> i8 {
        let q = (v as f64 / self.scale as f64).round() + self.zero_point as f64;
        q.clamp(-128.0, 127.0) as i8
    }

    /// The real value of code `q`.
    pub fn dequantize(&self, q: i8) -> f32 {
        self.scale * (q as i32 - self.zero_point as i32) as f32
    }
}

/// An activation tensor of the quantized graph: its per-image shape (batch axis excluded) and
/// its quantization.
#[derive(Clone, Debug, PartialEq)]
pub struct QValue {
    /// Shape of one image's tensor (`[C, H, W]` for feature maps, `[F]` for vectors).
    pub shape: Vec<usize>,
    /// Scale and zero point.
    pub q: QParams,
}

/// Int8 weights of a layer, symmetric per output channel, with the int32 bias.
#[derive(Clone, Debug, PartialEq)]
pub struct QWeights {
    /// Weight shape, output channels first (`[out, in]` dense, `[M, C/groups, kh, kw]` conv).
    pub shape: Vec<usize>,
    /// Codes in `−127..=127`, row-major.
    pub data: Vec<i8>,
    /// Scale of each output channel (`w ≈ scale[c]·q`).
    pub scales: Vec<f32>,
    /// Bias of each output channel in units of `s_in·scale[c]`.
    pub bias: Vec<i32>,
}

/// Per-output-channel requantization of an int32 accumulator to int8, with the fused clamp.
#[derive(Clone, Debug, PartialEq)]
pub struct Requant {
    /// Q31 fixed-point multipliers `M0`, one per output channel.
    pub multiplier: Vec<i32>,
    /// Right shifts (negative: left), one per output channel, in `−31..=31`.
    pub shift: Vec<i8>,
    /// Lowest output code (the fused ReLU/Clip lower bound, or −128).
    pub act_min: i8,
    /// Highest output code (the fused Clip upper bound, or 127).
    pub act_max: i8,
}

/// A 2-D window with its padding resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Height and width.
    pub kernel: [usize; 2],
    /// Vertical and horizontal stride.
    pub strides: [usize; 2],
    /// Vertical and horizontal dilation.
    pub dilations: [usize; 2],
    /// Padding `[top, left, bottom, right]`.
    pub pads: [usize; 4],
}

/// Fixed-point parameters of a quantized elementwise Add (TFLite scheme: both inputs are
/// shifted left by 20 bits, rescaled to a common scale `2·max(s_a, s_b)`, summed, rescaled to
/// the output scale).
#[derive(Clone, Debug, PartialEq)]
pub struct QAdd {
    /// Multiplier and shift of input A.
    pub a: (i32, i8),
    /// Multiplier and shift of input B.
    pub b: (i32, i8),
    /// Multiplier and shift of the sum.
    pub out: (i32, i8),
    /// Lowest output code.
    pub act_min: i8,
    /// Highest output code.
    pub act_max: i8,
}

/// Left shift applied to both Add inputs before rescaling.
pub const ADD_LEFT_SHIFT: u32 = 20;

/// An integer operator.
#[derive(Clone, Debug, PartialEq)]
pub enum QOp {
    /// Fully connected layer (from Gemm or MatMul): `[F_in] → [F_out]`.
    Dense {
        /// `[out, in]` weights.
        w: QWeights,
        /// Requantization.
        rq: Requant,
    },
    /// Convolution (groups; depthwise when groups = channels): `[C, H, W] → [M, OH, OW]`.
    Conv {
        /// `[M, C/groups, kh, kw]` weights.
        w: QWeights,
        /// Number of groups.
        groups: usize,
        /// Window.
        win: Window,
        /// Requantization.
        rq: Requant,
    },
    /// Max pooling (same quantization in and out); a window entirely in padding gives the zero
    /// point.
    MaxPool(Window),
    /// Average pooling with rounding (same quantization in and out); dilation is ignored like
    /// the float reference.
    AvgPool {
        /// Window.
        win: Window,
        /// Divide by the window including padding.
        count_include_pad: bool,
    },
    /// Mean over the spatial axes with rounding: `[C, H, W] → [C, 1, 1]`.
    GlobalAvgPool,
    /// Same codes, new shape (Flatten, Reshape, Dropout).
    Reshape,
    /// Standalone ReLU/Clip: clamps codes (same quantization in and out).
    Clamp {
        /// Lowest code.
        lo: i8,
        /// Highest code.
        hi: i8,
    },
    /// Elementwise sum of two tensors of the same shape.
    Add(QAdd),
}

impl QOp {
    /// A short name of the operator.
    pub fn name(&self) -> &'static str {
        match self {
            QOp::Dense { .. } => "Dense",
            QOp::Conv { .. } => "Conv",
            QOp::MaxPool(_) => "MaxPool",
            QOp::AvgPool { .. } => "AveragePool",
            QOp::GlobalAvgPool => "GlobalAveragePool",
            QOp::Reshape => "Reshape",
            QOp::Clamp { .. } => "Clamp",
            QOp::Add(_) => "Add",
        }
    }
}

/// One node: reads values by index, writes one new value.
#[derive(Clone, Debug, PartialEq)]
pub struct QNode {
    /// Name of the float node it comes from.
    pub name: String,
    /// Operator.
    pub op: QOp,
    /// Indices of the values it reads.
    pub inputs: Vec<usize>,
    /// Index of the value it writes.
    pub output: usize,
}

/// An integer-only int8 model: values (value 0 is the input), nodes in execution order, and
/// the output value.
#[derive(Clone, Debug, PartialEq)]
pub struct QGraph {
    /// Name of the float graph's input.
    pub input_name: String,
    /// Pixel preprocessing the model expects (from the float graph's metadata).
    pub preprocess: Preprocess,
    /// Every activation tensor; `values[0]` is the input.
    pub values: Vec<QValue>,
    /// Nodes in execution order; each writes a value no earlier node wrote.
    pub nodes: Vec<QNode>,
    /// Index of the value returned (dequantized) as the logits.
    pub output: usize,
}

/// Most terms of one accumulation (`255·127·K` must fit an `i32`).
pub const MAX_ACCUMULATION: usize = 66_000;

// ---------------------------------------------------------------------------------------------
// Building from a float graph.
// ---------------------------------------------------------------------------------------------

fn readers(g: &Graph, value: &str) -> usize {
    g.nodes
        .iter()
        .flat_map(|n| n.inputs.iter())
        .filter(|i| *i == value)
        .count()
        + g.outputs.iter().filter(|o| *o == value).count()
}

/// Moves a ReLU/Clip that is the only reader of an unpadded MaxPool in front of it (by swapping
/// the two nodes' operators): `relu(maxpool(x)) = maxpool(relu(x))`.
fn swap_pool_activation(g: &mut Graph) {
    loop {
        let mut hit = None;
        for (pi, p) in g.nodes.iter().enumerate() {
            let Op::MaxPool(a) = &p.op else { continue };
            let unpadded =
                a.pads == [0; 4] && matches!(a.auto_pad, AutoPad::NotSet | AutoPad::Valid);
            if !unpadded || readers(g, &p.outputs[0]) != 1 {
                continue;
            }
            if let Some(ai) = g.nodes.iter().position(|n| {
                n.inputs.first() == Some(&p.outputs[0])
                    && matches!(n.op, Op::Relu | Op::Clip { .. })
            }) {
                hit = Some((pi, ai));
                break;
            }
        }
        let Some((pi, ai)) = hit else { return };
        let pool = std::mem::replace(&mut g.nodes[pi].op, Op::Relu);
        let act = std::mem::replace(&mut g.nodes[ai].op, pool);
        g.nodes[pi].op = act;
    }
}

fn supported(op: &Op) -> bool {
    matches!(
        op,
        Op::Gemm(_)
            | Op::MatMul
            | Op::Conv(_)
            | Op::MaxPool(_)
            | Op::AvgPool(_)
            | Op::GlobalAvgPool
            | Op::Flatten { .. }
            | Op::Reshape { .. }
            | Op::Dropout { .. }
            | Op::Relu
            | Op::Clip { .. }
            | Op::Add
    )
}

/// Resolves one spatial axis of a window like the float reference: `(pad_begin, pad_end, out)`.
#[allow(clippy::too_many_arguments)]
fn resolve_axis(
    node: &str,
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pads: (usize, usize),
    auto: AutoPad,
    ceil_mode: bool,
) -> Result<(usize, usize, usize)> {
    if kernel == 0 || stride == 0 || dilation == 0 {
        return Err(Error::Invalid(format!(
            "node `{node}`: kernel, stride and dilation must be positive"
        )));
    }
    let eff = dilation * (kernel - 1) + 1;
    let (pb, pe) = match auto {
        AutoPad::NotSet => pads,
        AutoPad::Valid => (0, 0),
        AutoPad::SameUpper | AutoPad::SameLower => {
            let out = input.div_ceil(stride);
            let total = ((out.max(1) - 1) * stride + eff).saturating_sub(input);
            if auto == AutoPad::SameUpper {
                (total / 2, total - total / 2)
            } else {
                (total - total / 2, total / 2)
            }
        }
    };
    let padded = input + pb + pe;
    if padded < eff {
        return Err(Error::Invalid(format!(
            "node `{node}`: window of extent {eff} does not fit padded input {padded}"
        )));
    }
    let mut out = if ceil_mode {
        (padded - eff).div_ceil(stride) + 1
    } else {
        (padded - eff) / stride + 1
    };
    if ceil_mode && (out - 1) * stride >= input + pb {
        out -= 1;
    }
    Ok((pb, pe, out))
}

#[allow(clippy::too_many_arguments)]
fn resolve_window(
    node: &str,
    hw: [usize; 2],
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    pads: [usize; 4],
    auto: AutoPad,
    ceil_mode: bool,
    want: &[usize],
) -> Result<Window> {
    let (pt, pb, oh) = resolve_axis(
        node,
        hw[0],
        kernel[0],
        strides[0],
        dilations[0],
        (pads[0], pads[2]),
        auto,
        ceil_mode,
    )?;
    let (pl, pr, ow) = resolve_axis(
        node,
        hw[1],
        kernel[1],
        strides[1],
        dilations[1],
        (pads[1], pads[3]),
        auto,
        ceil_mode,
    )?;
    if want.len() != 3 || want[1] != oh || want[2] != ow {
        return Err(Error::Graph(format!(
            "node `{node}`: window output {oh}×{ow} differs from the inferred shape {want:?}"
        )));
    }
    Ok(Window {
        kernel,
        strides,
        dilations,
        pads: [pt, pl, pb, pr],
    })
}

/// Running range of one calibrated value.
#[derive(Clone, Copy)]
struct Range {
    lo: f32,
    hi: f32,
    seen: bool,
}

fn calibrate(
    g: &Graph,
    names: &[String],
    data: &Dataset,
    pre: &Preprocess,
    method: Calibration,
) -> Result<HashMap<String, (f32, f32)>> {
    let mut cal = g.clone();
    cal.outputs = names.to_vec();
    let input = cal
        .inputs
        .first()
        .ok_or_else(|| Error::Graph("the graph has no input".into()))?
        .clone();
    let mut ranges = vec![
        Range {
            lo: 0.0,
            hi: 0.0,
            seen: false
        };
        names.len()
    ];
    let batch = match method {
        Calibration::MinMax => 100,
        Calibration::Ema => 32,
    };
    for idx in data.batches(batch, None) {
        let (x, _) = data.batch(&idx, pre);
        let mut shape = input.concrete(idx.len());
        if let Some(d) = shape.first_mut() {
            *d = idx.len();
        }
        let x = x
            .into_shape_with_order(ndarray::IxDyn(&shape))
            .map_err(|e| Error::Input {
                name: input.name.clone(),
                detail: format!("calibration images do not fit the input: {e}"),
            })?;
        let outs = crate::exec::run(&cal, &[(input.name.as_str(), &x)])?;
        for (r, t) in ranges.iter_mut().zip(&outs) {
            let (lo, hi) = t
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            if !lo.is_finite() || !hi.is_finite() {
                continue;
            }
            match (method, r.seen) {
                (_, false) => *r = Range { lo, hi, seen: true },
                (Calibration::MinMax, true) => {
                    r.lo = r.lo.min(lo);
                    r.hi = r.hi.max(hi);
                }
                (Calibration::Ema, true) => {
                    r.lo = 0.9 * r.lo + 0.1 * lo;
                    r.hi = 0.9 * r.hi + 0.1 * hi;
                }
            }
        }
    }
    Ok(names
        .iter()
        .zip(ranges)
        .map(|(n, r)| (n.clone(), (r.lo, r.hi)))
        .collect())
}

/// Output code bounds of a fused (or standalone) ReLU/Clip under `q`.
fn act_bounds(node: &str, act: Option<&Op>, q: QParams) -> Result<(i8, i8)> {
    match act {
        None => Ok((-128, 127)),
        Some(Op::Relu) => Ok((q.quantize(0.0), 127)),
        Some(Op::Clip { min, max }) => {
            if min > max || min.is_nan() || max.is_nan() {
                return Err(Error::Invalid(format!(
                    "node `{node}`: Clip min {min} is above max {max}"
                )));
            }
            Ok((q.quantize(*min), q.quantize(*max)))
        }
        Some(op) => Err(Error::UnsupportedOps(vec![op.name().to_string()])),
    }
}

/// Quantizes `[out, in…]` float weights per output channel and the bias, and derives the
/// requantization for input scale `s_in` and output parameters `out_q`.
fn quantize_layer(
    shape: Vec<usize>,
    w: &[f32],
    bias: &[f32],
    s_in: f32,
    out_q: QParams,
    bounds: (i8, i8),
) -> Result<(QWeights, Requant)> {
    let out = shape.first().copied().unwrap_or(0);
    let per = w.len().checked_div(out).unwrap_or(0);
    let mut data = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(out);
    let mut qbias = Vec::with_capacity(out);
    let mut multiplier = Vec::with_capacity(out);
    let mut shift = Vec::with_capacity(out);
    for c in 0..out {
        let row = &w[c * per..(c + 1) * per];
        if row.iter().any(|v| !v.is_finite()) || !bias[c].is_finite() {
            return Err(Error::Invalid(
                "cannot quantize a non-finite weight or bias".into(),
            ));
        }
        let maxabs = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let s = if maxabs > 0.0 { maxabs / 127.0 } else { 1.0 };
        data.extend(
            row.iter()
                .map(|&v| (v / s).round().clamp(-127.0, 127.0) as i8),
        );
        scales.push(s);
        let bs = s_in as f64 * s as f64;
        qbias.push(
            (bias[c] as f64 / bs)
                .round()
                .clamp(i32::MIN as f64, i32::MAX as f64) as i32,
        );
        let (m0, sh) = quantize_multiplier(bs / out_q.scale as f64)?;
        multiplier.push(m0);
        shift.push(sh as i8);
    }
    Ok((
        QWeights {
            shape,
            data,
            scales,
            bias: qbias,
        },
        Requant {
            multiplier,
            shift,
            act_min: bounds.0,
            act_max: bounds.1,
        },
    ))
}

/// The per-output bias of a Gemm/Conv (`beta·C` broadcast to `[out]`), zeros when absent.
fn layer_bias(g: &Graph, node: &crate::graph::Node, out: usize, beta: f32) -> Result<Vec<f32>> {
    match node.inputs.get(2).filter(|b| !b.is_empty()) {
        None => Ok(vec![0.0; out]),
        Some(b) => {
            let t = g.weights.get(b).ok_or_else(|| {
                Error::Invalid(format!(
                    "node `{}`: bias `{b}` must be a stored weight for int8",
                    node.name
                ))
            })?;
            let t = t.broadcast(ndarray::IxDyn(&[out])).ok_or_else(|| {
                Error::Invalid(format!(
                    "node `{}`: bias of shape {:?} is not per output channel",
                    node.name,
                    t.shape()
                ))
            })?;
            Ok(t.iter().map(|v| v * beta).collect())
        }
    }
}

impl QGraph {
    /// Builds the integer model of `g`: folds BatchNorm, calibrates activation ranges on the
    /// first `spec.calibration` images of `calib` (preprocessed as `g`'s metadata says) and
    /// quantizes. Unsupported operators give [`Error::UnsupportedOps`] naming all of them.
    pub fn build(g: &Graph, calib: &Dataset, spec: &Int8Spec) -> Result<QGraph> {
        spec.check()?;
        let g = prepare(g)?;
        let pre = Preprocess::from_metadata(&g.metadata).unwrap_or_default();
        let input = &g.inputs[0];
        let out_name = &g.outputs[0];
        let shapes = g.infer_shapes(2)?;
        let sample = |name: &str| -> Result<Vec<usize>> {
            let s = shapes
                .get(name)
                .ok_or_else(|| Error::Graph(format!("no shape for `{name}`")))?;
            if s.first() != Some(&2) {
                return Err(Error::Invalid(format!(
                    "`{name}` does not keep the batch axis first (shape {s:?} for batch 2)"
                )));
            }
            Ok(s[1..].to_vec())
        };
        // Fusion: a layer whose only reader is a ReLU/Clip takes it as its clamp.
        let mut fused: HashMap<usize, usize> = HashMap::new();
        for (i, n) in g.nodes.iter().enumerate() {
            if !matches!(n.op, Op::Gemm(_) | Op::MatMul | Op::Conv(_)) {
                continue;
            }
            if readers(&g, &n.outputs[0]) != 1 {
                continue;
            }
            if let Some(j) = g.nodes.iter().position(|m| {
                m.inputs.first() == Some(&n.outputs[0])
                    && matches!(m.op, Op::Relu | Op::Clip { .. })
            }) {
                fused.insert(i, j);
            }
        }
        let absorbed: HashSet<usize> = fused.values().copied().collect();
        let mut names = vec![input.name.clone()];
        for (i, n) in g.nodes.iter().enumerate() {
            match n.op {
                Op::Gemm(_) | Op::MatMul | Op::Conv(_) => names.push(
                    fused
                        .get(&i)
                        .map_or(&n.outputs[0], |&j| &g.nodes[j].outputs[0])
                        .clone(),
                ),
                Op::Add => names.push(n.outputs[0].clone()),
                _ => {}
            }
        }
        let data = calib.take(spec.calibration);
        if data.is_empty() {
            return Err(Error::Invalid("int8 calibration needs images".into()));
        }
        let ranges = calibrate(&g, &names, &data, &pre, spec.method)?;
        let qp = |name: &str| -> Result<QParams> {
            let (lo, hi) = ranges
                .get(name)
                .copied()
                .ok_or_else(|| Error::Graph(format!("`{name}` was not calibrated")))?;
            QParams::from_range(lo, hi)
        };
        let mut values = vec![QValue {
            shape: sample(&input.name)?,
            q: qp(&input.name)?,
        }];
        let mut vmap: HashMap<String, usize> = HashMap::new();
        vmap.insert(input.name.clone(), 0);
        let mut nodes = Vec::new();
        for (i, n) in g.nodes.iter().enumerate() {
            if absorbed.contains(&i) {
                continue;
            }
            let act = fused.get(&i).map(|&j| &g.nodes[j]);
            let out = act.map_or(&n.outputs[0], |a| &a.outputs[0]).clone();
            let xin = |k: usize| -> Result<usize> {
                let name = n.inputs.get(k).map(String::as_str).unwrap_or("");
                vmap.get(name).copied().ok_or_else(|| {
                    Error::Invalid(format!(
                        "node `{}` ({}) reads `{name}` as an activation; int8 supports constants \
                         only as Gemm/MatMul/Conv weights and biases",
                        n.name,
                        n.op.name()
                    ))
                })
            };
            let x = xin(0)?;
            let xq = values[x].q;
            let xshape = values[x].shape.clone();
            let weight = |k: usize| -> Result<&Tensor> {
                let name = n.inputs.get(k).map(String::as_str).unwrap_or("");
                g.weights.get(name).ok_or_else(|| {
                    Error::Invalid(format!(
                        "node `{}` ({}): input `{name}` must be a stored weight for int8",
                        n.name,
                        n.op.name()
                    ))
                })
            };
            let (op, inputs, q) = match &n.op {
                Op::Gemm(_) | Op::MatMul => {
                    let w = weight(1)?;
                    let (rows, alpha, beta) = match &n.op {
                        Op::Gemm(a) => {
                            if a.trans_a {
                                return Err(Error::Invalid(format!(
                                    "node `{}`: Gemm with trans_a is not supported by int8",
                                    n.name
                                )));
                            }
                            (!a.trans_b, a.alpha, a.beta)
                        }
                        _ => (true, 1.0, 1.0),
                    };
                    if w.ndim() != 2 {
                        return Err(Error::Invalid(format!(
                            "node `{}`: int8 needs a 2-D weight, got {:?}",
                            n.name,
                            w.shape()
                        )));
                    }
                    // `rows`: the weight is [in, out] and must be transposed to [out, in].
                    let (fin, fout) = if rows {
                        (w.shape()[0], w.shape()[1])
                    } else {
                        (w.shape()[1], w.shape()[0])
                    };
                    if xshape != [fin] {
                        return Err(Error::Invalid(format!(
                            "node `{}`: int8 dense layers need a [N, {fin}] input, got [N, {:?}]",
                            n.name, xshape
                        )));
                    }
                    let wt: Vec<f32> = if rows {
                        w.t().iter().map(|v| v * alpha).collect()
                    } else {
                        w.iter().map(|v| v * alpha).collect()
                    };
                    let bias = match &n.op {
                        Op::Gemm(_) => layer_bias(&g, n, fout, beta)?,
                        _ => vec![0.0; fout],
                    };
                    let oq = qp(&out)?;
                    let bounds = act_bounds(&n.name, act.map(|a| &a.op), oq)?;
                    let (w, rq) =
                        quantize_layer(vec![fout, fin], &wt, &bias, xq.scale, oq, bounds)?;
                    (QOp::Dense { w, rq }, vec![x], oq)
                }
                Op::Conv(a) => {
                    let w = weight(1)?;
                    let ws = w.shape().to_vec();
                    if ws.len() != 4 || xshape.len() != 3 {
                        return Err(Error::Invalid(format!(
                            "node `{}`: int8 Conv needs a 4-D weight and NCHW input",
                            n.name
                        )));
                    }
                    let want = sample(&n.outputs[0])?;
                    let win = resolve_window(
                        &n.name,
                        [xshape[1], xshape[2]],
                        [ws[2], ws[3]],
                        a.strides,
                        a.dilations,
                        a.pads,
                        a.auto_pad,
                        false,
                        &want,
                    )?;
                    let bias = layer_bias(&g, n, ws[0], 1.0)?;
                    let wv: Vec<f32> = w.iter().copied().collect();
                    let oq = qp(&out)?;
                    let bounds = act_bounds(&n.name, act.map(|a| &a.op), oq)?;
                    let (w, rq) = quantize_layer(ws, &wv, &bias, xq.scale, oq, bounds)?;
                    (
                        QOp::Conv {
                            w,
                            groups: a.groups,
                            win,
                            rq,
                        },
                        vec![x],
                        oq,
                    )
                }
                Op::MaxPool(a) | Op::AvgPool(a) => {
                    if xshape.len() != 3 {
                        return Err(Error::Invalid(format!(
                            "node `{}`: pooling needs NCHW input",
                            n.name
                        )));
                    }
                    let is_max = matches!(n.op, Op::MaxPool(_));
                    let dil = if is_max { a.dilations } else { [1, 1] };
                    let want = sample(&n.outputs[0])?;
                    let win = resolve_window(
                        &n.name,
                        [xshape[1], xshape[2]],
                        a.kernel,
                        a.strides,
                        dil,
                        a.pads,
                        a.auto_pad,
                        a.ceil_mode,
                        &want,
                    )?;
                    let op = if is_max {
                        QOp::MaxPool(win)
                    } else {
                        QOp::AvgPool {
                            win,
                            count_include_pad: a.count_include_pad,
                        }
                    };
                    (op, vec![x], xq)
                }
                Op::GlobalAvgPool => {
                    if xshape.len() != 3 {
                        return Err(Error::Invalid(format!(
                            "node `{}`: GlobalAveragePool needs NCHW input",
                            n.name
                        )));
                    }
                    (QOp::GlobalAvgPool, vec![x], xq)
                }
                Op::Flatten { .. } | Op::Reshape { .. } | Op::Dropout { .. } => {
                    (QOp::Reshape, vec![x], xq)
                }
                Op::Relu | Op::Clip { .. } => {
                    let (lo, hi) = act_bounds(&n.name, Some(&n.op), xq)?;
                    (QOp::Clamp { lo, hi }, vec![x], xq)
                }
                Op::Add => {
                    let y = xin(1)?;
                    if values[y].shape != xshape {
                        return Err(Error::Invalid(format!(
                            "node `{}`: int8 Add needs equal shapes, got {:?} and {:?}",
                            n.name, xshape, values[y].shape
                        )));
                    }
                    let oq = qp(&out)?;
                    let (sa, sb, so) = (xq.scale as f64, values[y].q.scale as f64, oq.scale as f64);
                    let twice = 2.0 * sa.max(sb);
                    let m = |r: f64| -> Result<(i32, i8)> {
                        quantize_multiplier(r).map(|(m, s)| (m, s as i8))
                    };
                    let add = QAdd {
                        a: m(sa / twice)?,
                        b: m(sb / twice)?,
                        out: m(twice / ((1u64 << ADD_LEFT_SHIFT) as f64 * so))?,
                        act_min: -128,
                        act_max: 127,
                    };
                    (QOp::Add(add), vec![x, y], oq)
                }
                other => return Err(Error::UnsupportedOps(vec![other.name().to_string()])),
            };
            let shape = sample(&out)?;
            values.push(QValue { shape, q });
            vmap.insert(out, values.len() - 1);
            nodes.push(QNode {
                name: n.name.clone(),
                op,
                inputs,
                output: values.len() - 1,
            });
        }
        let output = vmap
            .get(out_name.as_str())
            .copied()
            .ok_or_else(|| Error::Graph(format!("output `{out_name}` is not an activation")))?;
        let q = QGraph {
            input_name: input.name.clone(),
            preprocess: pre,
            values,
            nodes,
            output,
        };
        q.check()?;
        Ok(q)
    }
}

/// The float graph the integer model mirrors: validated, BatchNorm folded, ReLU/Clip moved in
/// front of unpadded MaxPools, one input whose batch axis is symbolic, one output, supported
/// operators only.
fn prepare(g: &Graph) -> Result<Graph> {
    let mut g = g.clone();
    g.validate()?;
    crate::graph::fold::fold_batchnorm(&mut g)?;
    let mut bad: Vec<String> = Vec::new();
    for n in &g.nodes {
        if !supported(&n.op) {
            let name = match n.op {
                Op::BatchNorm { .. } => "BatchNormalization (not after a Conv/Gemm)".to_string(),
                _ => n.op.name().to_string(),
            };
            if !bad.contains(&name) {
                bad.push(name);
            }
        }
    }
    if !bad.is_empty() {
        return Err(Error::UnsupportedOps(bad));
    }
    if g.inputs.len() != 1 || g.outputs.len() != 1 {
        return Err(Error::Invalid(format!(
            "int8 needs one input and one output, the graph has {} and {}",
            g.inputs.len(),
            g.outputs.len()
        )));
    }
    if let Some(d) = g.inputs[0].shape.first_mut() {
        *d = crate::graph::Dim::Sym("N".into());
    }
    swap_pool_activation(&mut g);
    g.validate()?;
    Ok(g)
}

// ---------------------------------------------------------------------------------------------
// Checking (every decoded or built graph passes this before it runs).
// ---------------------------------------------------------------------------------------------

fn bad(d: String) -> Error {
    Error::Invalid(format!("inconsistent int8 model: {d}"))
}

impl QGraph {
    /// Checks every index, shape, length and range so that [`QGraph::run`] cannot panic or
    /// overflow its `i32` accumulators.
    pub fn check(&self) -> Result<()> {
        if self.values.is_empty() || self.values.len() > crate::graph::limits::MAX_NODES + 1 {
            return Err(bad(format!("{} values", self.values.len())));
        }
        if self.nodes.len() > crate::graph::limits::MAX_NODES {
            return Err(bad(format!("{} nodes", self.nodes.len())));
        }
        for (i, v) in self.values.iter().enumerate() {
            if !(v.q.scale.is_finite() && v.q.scale > 0.0) {
                return Err(bad(format!("value {i} has scale {}", v.q.scale)));
            }
            if v.shape.len() > crate::graph::limits::MAX_RANK
                || v.shape.contains(&0)
                || checked_numel(&v.shape)? > crate::graph::limits::MAX_TENSOR_ELEMENTS
            {
                return Err(bad(format!("value {i} has shape {:?}", v.shape)));
            }
        }
        let mut defined = vec![false; self.values.len()];
        defined[0] = true;
        for n in &self.nodes {
            let arity = if matches!(n.op, QOp::Add(_)) { 2 } else { 1 };
            if n.inputs.len() != arity {
                return Err(bad(format!(
                    "node `{}` has {} inputs",
                    n.name,
                    n.inputs.len()
                )));
            }
            if n.inputs
                .iter()
                .any(|&i| !defined.get(i).copied().unwrap_or(false))
            {
                return Err(bad(format!("node `{}` reads an undefined value", n.name)));
            }
            if defined.get(n.output).copied().unwrap_or(true) {
                return Err(bad(format!(
                    "node `{}` writes value {} twice or out of range",
                    n.name, n.output
                )));
            }
            defined[n.output] = true;
            let xs = &self.values[n.inputs[0]].shape;
            let ys = &self.values[n.output].shape;
            let e = |d: &str| Err(bad(format!("node `{}` ({}): {d}", n.name, n.op.name())));
            let same_q = self.values[n.inputs[0]].q == self.values[n.output].q;
            if !same_q && !matches!(n.op, QOp::Dense { .. } | QOp::Conv { .. } | QOp::Add(_)) {
                return e("input and output quantization differ");
            }
            match &n.op {
                QOp::Dense { w, rq } => {
                    if w.shape.len() != 2 || *xs != [w.shape[1]] || *ys != [w.shape[0]] {
                        return e(
                            format!("weight {:?}, input {xs:?}, output {ys:?}", w.shape).as_str()
                        );
                    }
                    check_layer(w, rq, w.shape[1]).or_else(|d| e(&d))?;
                }
                QOp::Conv { w, groups, win, rq } => {
                    let ok = w.shape.len() == 4
                        && xs.len() == 3
                        && ys.len() == 3
                        && *groups > 0
                        && xs[0].is_multiple_of(*groups)
                        && w.shape[0].is_multiple_of(*groups)
                        && xs[0] / groups == w.shape[1]
                        && ys[0] == w.shape[0]
                        && win.kernel == [w.shape[2], w.shape[3]]
                        && window_ok(win);
                    if !ok {
                        return e(&format!(
                            "weight {:?}, groups {groups}, input {xs:?}, output {ys:?}",
                            w.shape
                        ));
                    }
                    let k = w.shape[1]
                        .checked_mul(w.shape[2])
                        .and_then(|v| v.checked_mul(w.shape[3]))
                        .unwrap_or(usize::MAX);
                    check_layer(w, rq, k).or_else(|d| e(&d))?;
                }
                QOp::MaxPool(win) | QOp::AvgPool { win, .. } => {
                    if xs.len() != 3 || ys.len() != 3 || xs[0] != ys[0] || !window_ok(win) {
                        return e(&format!("input {xs:?}, output {ys:?}, window {win:?}"));
                    }
                }
                QOp::GlobalAvgPool => {
                    if xs.len() != 3 || *ys != [xs[0], 1, 1] {
                        return e(&format!("input {xs:?}, output {ys:?}"));
                    }
                }
                QOp::Reshape => {
                    if checked_numel(xs)? != checked_numel(ys)? {
                        return e(&format!("input {xs:?}, output {ys:?}"));
                    }
                }
                QOp::Clamp { lo, hi } => {
                    if xs != ys || lo > hi {
                        return e(&format!("input {xs:?}, output {ys:?}, clamp {lo}..{hi}"));
                    }
                }
                QOp::Add(a) => {
                    let shifts_ok = [a.a.1, a.b.1, a.out.1]
                        .iter()
                        .all(|s| (-31..=31).contains(s));
                    let mults_ok = [a.a.0, a.b.0, a.out.0].iter().all(|m| *m >= 0);
                    if xs != ys
                        || self.values[n.inputs[1]].shape != *xs
                        || !shifts_ok
                        || !mults_ok
                        || a.act_min > a.act_max
                    {
                        return e("shapes or fixed-point parameters");
                    }
                }
            }
        }
        if !defined.get(self.output).copied().unwrap_or(false) {
            return Err(bad(format!(
                "output value {} is never written",
                self.output
            )));
        }
        Ok(())
    }
}

fn window_ok(w: &Window) -> bool {
    let small = |v: usize| (1..=1 << 16).contains(&v);
    w.kernel
        .iter()
        .chain(&w.strides)
        .chain(&w.dilations)
        .all(|&v| small(v))
        && w.pads.iter().all(|&p| p <= 1 << 16)
        && w.kernel[0] * w.kernel[1] <= MAX_ACCUMULATION
}

fn check_layer(w: &QWeights, rq: &Requant, k: usize) -> std::result::Result<(), String> {
    let n = checked_numel(&w.shape).map_err(|e| e.to_string())?;
    let out = w.shape[0];
    if w.data.len() != n
        || w.scales.len() != out
        || w.bias.len() != out
        || rq.multiplier.len() != out
        || rq.shift.len() != out
    {
        return Err("lengths of weights, scales, biases or multipliers".into());
    }
    if k > MAX_ACCUMULATION {
        return Err(format!(
            "{k} terms per accumulation exceed {MAX_ACCUMULATION}"
        ));
    }
    if w.data.contains(&i8::MIN) {
        return Err("a weight code is −128 (symmetric codes are −127..=127)".into());
    }
    if rq.multiplier.iter().any(|m| *m < 0)
        || rq.shift.iter().any(|s| !(-31..=31).contains(s))
        || rq.act_min > rq.act_max
        || w.scales.iter().any(|s| !(s.is_finite() && *s > 0.0))
    {
        return Err("multiplier, shift, clamp or scale out of range".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The integer executor.
// ---------------------------------------------------------------------------------------------

/// Dense layer on the int8 kernel: `(x − z_x)·Wᵀ` through [`int8::PackedI8`] (exact `i32`
/// sums), then [`int8::requantize`] with the bias. Bit-identical to the loop twin
/// `dense_int_loops` (tests below).
fn dense_int(x: &[i8], n: usize, zx: i32, w: &QWeights, rq: &Requant, zo: i32) -> Result<Vec<i8>> {
    let (fout, fin) = (w.shape[0], w.shape[1]);
    let packed = int8::PackedI8::from_rows(fout, fin, &w.data, &[])?;
    let mut acc = vec![0i32; n * fout];
    packed.gemm(n, x, zx as i8, &mut acc)?;
    let mut y = vec![0i8; n * fout];
    int8::requantize(fout, &acc, &requant_of(w, rq, 0..fout, zo), &mut y)?;
    Ok(y)
}

/// The requantization of output channels `range` of a layer.
fn requant_of<'a>(
    w: &'a QWeights,
    rq: &'a Requant,
    range: std::ops::Range<usize>,
    zo: i32,
) -> int8::Requantize<'a> {
    int8::Requantize {
        bias: &w.bias[range.clone()],
        multiplier: &rq.multiplier[range.clone()],
        shift: &rq.shift[range],
        out_zp: zo,
        lo: rq.act_min,
        hi: rq.act_max,
    }
}

/// Input row/column read by output position `o`, kernel tap `k` of one axis, or `None` in the
/// padding.
fn tap(o: usize, k: usize, stride: usize, dil: usize, pad: usize, size: usize) -> Option<usize> {
    (o * stride + k * dil)
        .checked_sub(pad)
        .filter(|&i| i < size)
}

/// Convolution on the int8 kernel by im2col: for each image and group, the patches
/// (`OH·OW × C/g·kh·kw`, padding filled with the input zero point so it adds 0) times the
/// group's weights through [`int8::PackedI8`], requantized per channel and written back in
/// `[M, OH, OW]` order. Bit-identical to the loop twin `conv_int_loops` (tests below).
#[allow(clippy::too_many_arguments)]
fn conv_int(
    x: &[i8],
    n: usize,
    xs: &[usize],
    ys: &[usize],
    zx: i32,
    w: &QWeights,
    groups: usize,
    win: &Window,
    rq: &Requant,
    zo: i32,
) -> Result<Vec<i8>> {
    let (c, h, wd) = (xs[0], xs[1], xs[2]);
    let (m, oh, ow) = (ys[0], ys[1], ys[2]);
    let (cg, kh, kw) = (w.shape[1], w.shape[2], w.shape[3]);
    let mg = m / groups;
    let (taps, pos) = (cg * kh * kw, oh * ow);
    let packed: Vec<int8::PackedI8> = (0..groups)
        .map(|g| {
            int8::PackedI8::from_rows(mg, taps, &w.data[g * mg * taps..(g + 1) * mg * taps], &[])
        })
        .collect::<Result<_>>()?;
    let rows: Vec<Vec<Option<usize>>> = (0..oh)
        .map(|o| {
            (0..kh)
                .map(|k| tap(o, k, win.strides[0], win.dilations[0], win.pads[0], h))
                .collect()
        })
        .collect();
    let cols: Vec<Vec<Option<usize>>> = (0..ow)
        .map(|o| {
            (0..kw)
                .map(|k| tap(o, k, win.strides[1], win.dilations[1], win.pads[1], wd))
                .collect()
        })
        .collect();
    let mut patches = vec![zx as i8; pos * taps];
    let mut acc = vec![0i32; pos * mg];
    let mut yg = vec![0i8; pos * mg];
    let mut y = vec![0i8; n * m * pos];
    for b in 0..n {
        let xb = &x[b * c * h * wd..(b + 1) * c * h * wd];
        for (g, pk) in packed.iter().enumerate() {
            for (oy, ry) in rows.iter().enumerate() {
                for (ox, rx) in cols.iter().enumerate() {
                    let dst = &mut patches[(oy * ow + ox) * taps..(oy * ow + ox + 1) * taps];
                    for ci in 0..cg {
                        let plane = &xb[(g * cg + ci) * h * wd..(g * cg + ci + 1) * h * wd];
                        for (ky, iy) in ry.iter().enumerate() {
                            for (kx, ix) in rx.iter().enumerate() {
                                dst[(ci * kh + ky) * kw + kx] = match (iy, ix) {
                                    (Some(iy), Some(ix)) => plane[iy * wd + ix],
                                    _ => zx as i8,
                                };
                            }
                        }
                    }
                }
            }
            pk.gemm(pos, &patches, zx as i8, &mut acc)?;
            int8::requantize(
                mg,
                &acc,
                &requant_of(w, rq, g * mg..(g + 1) * mg, zo),
                &mut yg,
            )?;
            let yb = &mut y[b * m * pos..(b + 1) * m * pos];
            for p in 0..pos {
                for o in 0..mg {
                    yb[(g * mg + o) * pos + p] = yg[p * mg + o];
                }
            }
        }
    }
    Ok(y)
}

/// Calls `f(plane, oy, ox, taps)` for every output position of a pooling window, with the input
/// offsets (within the plane) the window covers.
fn pool_windows(
    xs: &[usize],
    ys: &[usize],
    win: &Window,
    mut f: impl FnMut(usize, usize, usize, &[usize]),
) {
    let (c, h, w) = (xs[0], xs[1], xs[2]);
    let (oh, ow) = (ys[1], ys[2]);
    let mut taps = Vec::with_capacity(win.kernel[0] * win.kernel[1]);
    for p in 0..c {
        for oy in 0..oh {
            for ox in 0..ow {
                taps.clear();
                for ky in 0..win.kernel[0] {
                    let Some(iy) = tap(oy, ky, win.strides[0], win.dilations[0], win.pads[0], h)
                    else {
                        continue;
                    };
                    for kx in 0..win.kernel[1] {
                        if let Some(ix) =
                            tap(ox, kx, win.strides[1], win.dilations[1], win.pads[1], w)
                        {
                            taps.push(iy * w + ix);
                        }
                    }
                }
                f(p, oy, ox, &taps);
            }
        }
    }
}

/// Divisor of an average-pooling window when padding counts (ONNX `count_include_pad`): the
/// window clipped to the padded input.
fn padded_count(xs: &[usize], win: &Window, oy: usize, ox: usize) -> usize {
    let axis = |o: usize, a: usize, size: usize| -> usize {
        let start = o * win.strides[a];
        let end = start + win.kernel[a];
        let lim = size + win.pads[a] + win.pads[a + 2];
        end.min(lim).saturating_sub(start)
    };
    axis(oy, 0, xs[1]) * axis(ox, 1, xs[2])
}

/// `round(num / den)` with ties away from zero, `den > 0`.
fn div_round(num: i64, den: i64) -> i64 {
    if num >= 0 {
        (num + den / 2) / den
    } else {
        (num - den / 2) / den
    }
}

impl QGraph {
    /// Shape of one input image (batch axis excluded).
    pub fn input_shape(&self) -> &[usize] {
        &self.values[0].shape
    }

    /// Quantization of the input.
    pub fn input_params(&self) -> QParams {
        self.values[0].q
    }

    fn batch_of(&self, x: &Tensor) -> Result<usize> {
        let want = self.input_shape();
        if x.ndim() != want.len() + 1 || x.shape()[1..] != *want {
            return Err(Error::Input {
                name: self.input_name.clone(),
                detail: format!(
                    "shape {:?} does not match [N, {}]",
                    x.shape(),
                    want.iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        Ok(x.shape()[0])
    }

    /// Runs the integer model on `n` images already quantized with [`QGraph::input_params`]
    /// (`x.len() = n · input numel`) and returns the output codes, quantized with the output
    /// value's parameters. No floating point is involved.
    pub fn run_integer(&self, x: &[i8], n: usize) -> Result<Vec<i8>> {
        let numel = checked_numel(self.input_shape())?;
        if numel.checked_mul(n) != Some(x.len()) {
            return Err(Error::Input {
                name: self.input_name.clone(),
                detail: format!("{} codes for {n} images of {numel}", x.len()),
            });
        }
        let mut vals: Vec<Option<Vec<i8>>> = vec![None; self.values.len()];
        vals[0] = Some(x.to_vec());
        for node in &self.nodes {
            let get = |k: usize| -> Result<&[i8]> {
                vals[node.inputs[k]]
                    .as_deref()
                    .ok_or_else(|| bad(format!("node `{}` reads an unset value", node.name)))
            };
            let xv = get(0)?;
            let xq = &self.values[node.inputs[0]];
            let yq = &self.values[node.output];
            let (zx, zo) = (xq.q.zero_point as i32, yq.q.zero_point as i32);
            let (xs, ys) = (&xq.shape[..], &yq.shape[..]);
            let y: Vec<i8> = match &node.op {
                QOp::Dense { w, rq } => dense_int(xv, n, zx, w, rq, zo)?,
                QOp::Conv { w, groups, win, rq } => {
                    conv_int(xv, n, xs, ys, zx, w, *groups, win, rq, zo)?
                }
                QOp::MaxPool(win) => {
                    let (ins, outs) = (checked_numel(xs)?, checked_numel(ys)?);
                    let mut y = Vec::with_capacity(n * outs);
                    for b in 0..n {
                        let xb = &xv[b * ins..(b + 1) * ins];
                        let hw = xs[1] * xs[2];
                        pool_windows(xs, ys, win, |p, _, _, taps| {
                            let plane = &xb[p * hw..(p + 1) * hw];
                            y.push(
                                taps.iter()
                                    .map(|&t| plane[t])
                                    .max()
                                    .unwrap_or(xq.q.zero_point),
                            );
                        });
                    }
                    y
                }
                QOp::AvgPool {
                    win,
                    count_include_pad,
                } => {
                    let (ins, outs) = (checked_numel(xs)?, checked_numel(ys)?);
                    let mut y = Vec::with_capacity(n * outs);
                    for b in 0..n {
                        let xb = &xv[b * ins..(b + 1) * ins];
                        let hw = xs[1] * xs[2];
                        pool_windows(xs, ys, win, |p, oy, ox, taps| {
                            let plane = &xb[p * hw..(p + 1) * hw];
                            let sum: i64 =
                                taps.iter().map(|&t| (plane[t] as i32 - zx) as i64).sum();
                            let count = if *count_include_pad {
                                padded_count(xs, win, oy, ox)
                            } else {
                                taps.len()
                            };
                            let mean = div_round(sum, count.max(1) as i64);
                            y.push((mean + zx as i64).clamp(-128, 127) as i8);
                        });
                    }
                    y
                }
                QOp::GlobalAvgPool => {
                    let hw = xs[1] * xs[2];
                    xv.chunks(hw.max(1))
                        .take(n * xs[0])
                        .map(|plane| {
                            let sum: i64 = plane.iter().map(|&v| (v as i32 - zx) as i64).sum();
                            (div_round(sum, hw.max(1) as i64) + zx as i64).clamp(-128, 127) as i8
                        })
                        .collect()
                }
                QOp::Reshape => xv.to_vec(),
                QOp::Clamp { lo, hi } => xv.iter().map(|v| (*v).clamp(*lo, *hi)).collect(),
                QOp::Add(a) => {
                    let bv = get(1)?;
                    let zb = self.values[node.inputs[1]].q.zero_point as i32;
                    xv.iter()
                        .zip(bv)
                        .map(|(&p, &q)| {
                            let pa = (p as i32 - zx) << ADD_LEFT_SHIFT;
                            let qb = (q as i32 - zb) << ADD_LEFT_SHIFT;
                            let sa = multiply_by_quantized_multiplier(pa, a.a.0, a.a.1 as i32);
                            let sb = multiply_by_quantized_multiplier(qb, a.b.0, a.b.1 as i32);
                            let s = multiply_by_quantized_multiplier(
                                sa.saturating_add(sb),
                                a.out.0,
                                a.out.1 as i32,
                            );
                            s.saturating_add(zo)
                                .clamp(a.act_min as i32, a.act_max as i32)
                                as i8
                        })
                        .collect()
                }
            };
            vals[node.output] = Some(y);
        }
        vals[self.output]
            .take()
            .ok_or_else(|| bad("the output was not computed".into()))
    }

    /// Runs the integer model on f32 inputs `[N, …input shape]`: quantizes the input once,
    /// runs [`QGraph::run_integer`] and dequantizes the output (`[N, …output shape]`).
    pub fn run(&self, x: &Tensor) -> Result<Tensor> {
        let n = self.batch_of(x)?;
        let q = self.input_params();
        let codes: Vec<i8> = x.iter().map(|&v| q.quantize(v)).collect();
        let y = self.run_integer(&codes, n)?;
        let oq = self.values[self.output].q;
        let mut shape = vec![n];
        shape.extend_from_slice(&self.values[self.output].shape);
        crate::tensor::from_vec(&shape, y.iter().map(|&c| oq.dequantize(c)).collect())
    }

    /// The float twin: the same model with fake quantization in f64 — dequantized weights and
    /// biases, exact real multipliers, and every value rounded to its int8 grid. Differs from
    /// [`QGraph::run`] only by the fixed-point rounding of the multipliers.
    pub fn run_simulated(&self, x: &Tensor) -> Result<Tensor> {
        let n = self.batch_of(x)?;
        let fq = |v: f64, q: QParams, lo: i8, hi: i8| -> f64 {
            let s = q.scale as f64;
            let c = ((v / s).round() + q.zero_point as f64).clamp(lo as f64, hi as f64);
            s * (c - q.zero_point as f64)
        };
        let q0 = self.input_params();
        let mut vals: Vec<Option<Vec<f64>>> = vec![None; self.values.len()];
        vals[0] = Some(x.iter().map(|&v| fq(v as f64, q0, -128, 127)).collect());
        for node in &self.nodes {
            let get = |k: usize| -> Result<&[f64]> {
                vals[node.inputs[k]]
                    .as_deref()
                    .ok_or_else(|| bad(format!("node `{}` reads an unset value", node.name)))
            };
            let xv = get(0)?;
            let xq = &self.values[node.inputs[0]];
            let yq = &self.values[node.output];
            let (xs, ys) = (&xq.shape[..], &yq.shape[..]);
            let (ins, outs) = (checked_numel(xs)?, checked_numel(ys)?);
            let oq = yq.q;
            let y: Vec<f64> = match &node.op {
                QOp::Dense { w, rq } => {
                    let (fout, fin) = (w.shape[0], w.shape[1]);
                    let mut y = Vec::with_capacity(n * fout);
                    for b in 0..n {
                        for o in 0..fout {
                            let s = w.scales[o] as f64;
                            let mut acc = w.bias[o] as f64 * xq.q.scale as f64 * s;
                            for i in 0..fin {
                                acc += xv[b * fin + i] * w.data[o * fin + i] as f64 * s;
                            }
                            y.push(fq(acc, oq, rq.act_min, rq.act_max));
                        }
                    }
                    y
                }
                QOp::Conv { w, groups, win, rq } => {
                    let (c, h, wd) = (xs[0], xs[1], xs[2]);
                    let (m, oh, ow) = (ys[0], ys[1], ys[2]);
                    let (cg, kh, kw) = (w.shape[1], w.shape[2], w.shape[3]);
                    let mg = m / groups;
                    let mut y = Vec::with_capacity(n * outs);
                    for b in 0..n {
                        for oc in 0..m {
                            let s = w.scales[oc] as f64;
                            let g = oc / mg;
                            for oy in 0..oh {
                                for ox in 0..ow {
                                    let mut acc = w.bias[oc] as f64 * xq.q.scale as f64 * s;
                                    for ci in 0..cg {
                                        let base = b * c * h * wd + (g * cg + ci) * h * wd;
                                        for ky in 0..kh {
                                            let Some(iy) = tap(
                                                oy,
                                                ky,
                                                win.strides[0],
                                                win.dilations[0],
                                                win.pads[0],
                                                h,
                                            ) else {
                                                continue;
                                            };
                                            for kx in 0..kw {
                                                let Some(ix) = tap(
                                                    ox,
                                                    kx,
                                                    win.strides[1],
                                                    win.dilations[1],
                                                    win.pads[1],
                                                    wd,
                                                ) else {
                                                    continue;
                                                };
                                                let wv = w.data
                                                    [((oc * cg + ci) * kh + ky) * kw + kx]
                                                    as f64
                                                    * s;
                                                acc += xv[base + iy * wd + ix] * wv;
                                            }
                                        }
                                    }
                                    y.push(fq(acc, oq, rq.act_min, rq.act_max));
                                }
                            }
                        }
                    }
                    y
                }
                QOp::MaxPool(win) => {
                    let mut y = Vec::with_capacity(n * outs);
                    let hw = xs[1] * xs[2];
                    for b in 0..n {
                        pool_windows(xs, ys, win, |p, _, _, taps| {
                            let base = b * ins + p * hw;
                            y.push(
                                taps.iter()
                                    .map(|&t| xv[base + t])
                                    .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
                                    .unwrap_or(0.0),
                            );
                        });
                    }
                    y
                }
                QOp::AvgPool {
                    win,
                    count_include_pad,
                } => {
                    let mut y = Vec::with_capacity(n * outs);
                    let hw = xs[1] * xs[2];
                    for b in 0..n {
                        pool_windows(xs, ys, win, |p, oy, ox, taps| {
                            let base = b * ins + p * hw;
                            let sum: f64 = taps.iter().map(|&t| xv[base + t]).sum();
                            let count = if *count_include_pad {
                                padded_count(xs, win, oy, ox)
                            } else {
                                taps.len()
                            };
                            y.push(fq(sum / count.max(1) as f64, oq, -128, 127));
                        });
                    }
                    y
                }
                QOp::GlobalAvgPool => {
                    let hw = (xs[1] * xs[2]).max(1);
                    xv.chunks(hw)
                        .take(n * xs[0])
                        .map(|p| fq(p.iter().sum::<f64>() / hw as f64, oq, -128, 127))
                        .collect()
                }
                QOp::Reshape => xv.to_vec(),
                QOp::Clamp { lo, hi } => {
                    let (l, h) = (oq.dequantize(*lo) as f64, oq.dequantize(*hi) as f64);
                    xv.iter().map(|v| v.clamp(l, h)).collect()
                }
                QOp::Add(a) => {
                    let bv = get(1)?;
                    xv.iter()
                        .zip(bv)
                        .map(|(p, q)| fq(p + q, oq, a.act_min, a.act_max))
                        .collect()
                }
            };
            vals[node.output] = Some(y);
        }
        let y = vals[self.output]
            .take()
            .ok_or_else(|| bad("the output was not computed".into()))?;
        let mut shape = vec![n];
        shape.extend_from_slice(&self.values[self.output].shape);
        crate::tensor::from_vec(&shape, y.into_iter().map(|v| v as f32).collect())
    }

    /// Accuracy, loss and confusion of the integer model on `data` (preprocessed with
    /// [`QGraph::preprocess`]), in batches of `batch`.
    pub fn evaluate(&self, data: &Dataset, batch: usize) -> Result<EvalReport> {
        self.evaluate_by(data, batch, |x| self.run(x))
    }

    /// [`QGraph::evaluate`] with the float twin [`QGraph::run_simulated`].
    pub fn evaluate_simulated(&self, data: &Dataset, batch: usize) -> Result<EvalReport> {
        self.evaluate_by(data, batch, |x| self.run_simulated(x))
    }

    fn evaluate_by(
        &self,
        data: &Dataset,
        batch: usize,
        f: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<EvalReport> {
        let numel = checked_numel(self.input_shape())?;
        if numel != data.pixels() {
            return Err(Error::Input {
                name: self.input_name.clone(),
                detail: format!(
                    "the model expects {:?} per image, the dataset has {}×{} pixels",
                    self.input_shape(),
                    data.rows,
                    data.cols
                ),
            });
        }
        let classes = data.classes;
        let mut confusion = vec![vec![0u32; classes]; classes];
        let mut loss_sum = 0.0f64;
        for idx in data.batches(batch.max(1), None) {
            let (x, labels) = data.batch(&idx, &self.preprocess);
            let mut shape = vec![idx.len()];
            shape.extend_from_slice(self.input_shape());
            let x = x
                .into_shape_with_order(ndarray::IxDyn(&shape))
                .map_err(|e| Error::Invalid(e.to_string()))?;
            let out = f(&x)?;
            let k = out.len() / idx.len().max(1);
            if k < classes {
                return Err(Error::Invalid(format!(
                    "the model has {k} outputs but the dataset has {classes} classes"
                )));
            }
            let logits = out
                .into_shape_with_order(ndarray::IxDyn(&[idx.len(), k]))
                .map_err(|e| Error::Invalid(e.to_string()))?;
            let (loss, _, _) = crate::train::loss::cross_entropy(&logits, &labels)?;
            loss_sum += loss as f64 * labels.len() as f64;
            let l = crate::tensor::to_contiguous(&logits);
            for (i, &t) in labels.iter().enumerate() {
                let (p, _) = crate::train::loss::argmax(&l[i * k..(i + 1) * k]);
                if let Some(c) = confusion.get_mut(t as usize).and_then(|r| r.get_mut(p)) {
                    *c += 1;
                }
            }
        }
        Ok(EvalReport::from_confusion(confusion, loss_sum, data.len()))
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding.
// ---------------------------------------------------------------------------------------------

/// Magic bytes of an encoded [`QGraph`].
pub const MAGIC: &[u8; 4] = b"LQI8";
/// Format version written by [`QGraph::encode`].
pub const VERSION: u8 = 1;
/// Longest node or input name in an encoding.
pub const MAX_NAME: usize = 4096;

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn i8(&mut self, v: i8) {
        self.0.push(v as u8);
    }
    fn u32(&mut self, v: usize) -> Result<()> {
        let v = u32::try_from(v).map_err(|_| Error::Limit {
            what: "int8 model field",
            got: v as u64,
            limit: u32::MAX as u64,
        })?;
        self.0.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f32(&mut self, v: f32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) -> Result<()> {
        if s.len() > MAX_NAME {
            return Err(Error::Limit {
                what: "int8 model name",
                got: s.len() as u64,
                limit: MAX_NAME as u64,
            });
        }
        self.u32(s.len())?;
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
    fn shape(&mut self, s: &[usize]) -> Result<()> {
        self.u8(u8::try_from(s.len()).map_err(|_| bad("rank above 255".into()))?);
        s.iter().try_for_each(|&d| self.u32(d))
    }
    fn window(&mut self, w: &Window) -> Result<()> {
        w.kernel
            .iter()
            .chain(&w.strides)
            .chain(&w.dilations)
            .chain(&w.pads)
            .try_for_each(|&v| self.u32(v))
    }
    fn layer(&mut self, w: &QWeights, rq: &Requant) -> Result<()> {
        self.shape(&w.shape)?;
        w.data.iter().for_each(|&v| self.i8(v));
        w.scales.iter().for_each(|&v| self.f32(v));
        w.bias.iter().for_each(|&v| self.i32(v));
        rq.multiplier.iter().for_each(|&v| self.i32(v));
        rq.shift.iter().for_each(|&v| self.i8(v));
        self.i8(rq.act_min);
        self.i8(rq.act_max);
        Ok(())
    }
    fn node(&mut self, n: &QNode) -> Result<()> {
        self.str(&n.name)?;
        let tag = match &n.op {
            QOp::Dense { .. } => 1,
            QOp::Conv { .. } => 2,
            QOp::MaxPool(_) => 3,
            QOp::AvgPool { .. } => 4,
            QOp::GlobalAvgPool => 5,
            QOp::Reshape => 6,
            QOp::Clamp { .. } => 7,
            QOp::Add(_) => 8,
        };
        self.u8(tag);
        self.u8(u8::try_from(n.inputs.len()).map_err(|_| bad("too many inputs".into()))?);
        n.inputs.iter().try_for_each(|&i| self.u32(i))?;
        self.u32(n.output)?;
        match &n.op {
            QOp::Dense { w, rq } => self.layer(w, rq)?,
            QOp::Conv { w, groups, win, rq } => {
                self.u32(*groups)?;
                self.window(win)?;
                self.layer(w, rq)?;
            }
            QOp::MaxPool(win) => self.window(win)?,
            QOp::AvgPool {
                win,
                count_include_pad,
            } => {
                self.window(win)?;
                self.u8(u8::from(*count_include_pad));
            }
            QOp::GlobalAvgPool | QOp::Reshape => {}
            QOp::Clamp { lo, hi } => {
                self.i8(*lo);
                self.i8(*hi);
            }
            QOp::Add(a) => {
                for (m, s) in [a.a, a.b, a.out] {
                    self.i32(m);
                    self.i8(s);
                }
                self.i8(a.act_min);
                self.i8(a.act_max);
            }
        }
        Ok(())
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

fn dec(detail: String) -> Error {
    Error::Decode {
        what: "int8 model",
        detail,
    }
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| dec(format!("truncated: {n} bytes wanted at offset {}", self.at)))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn i8(&mut self) -> Result<i8> {
        Ok(self.u8()? as i8)
    }
    fn u32(&mut self) -> Result<usize> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
    }
    fn i32(&mut self) -> Result<i32> {
        let s = self.take(4)?;
        Ok(i32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn f32(&mut self) -> Result<f32> {
        let s = self.take(4)?;
        Ok(f32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    /// `n` items of `size` bytes each, checking that they are present before allocating.
    fn vec<T>(&mut self, n: usize, size: usize, f: impl Fn(&[u8]) -> T) -> Result<Vec<T>> {
        let bytes = self.take(
            n.checked_mul(size)
                .ok_or_else(|| dec(format!("{n} items overflow")))?,
        )?;
        Ok(bytes.chunks_exact(size).map(f).collect())
    }
    fn str(&mut self) -> Result<String> {
        let n = self.u32()?;
        if n > MAX_NAME {
            return Err(dec(format!("name of {n} bytes exceeds {MAX_NAME}")));
        }
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| dec("name is not UTF-8".into()))
    }
    fn shape(&mut self) -> Result<Vec<usize>> {
        let rank = self.u8()? as usize;
        if rank > crate::graph::limits::MAX_RANK {
            return Err(dec(format!("rank {rank}")));
        }
        let s = (0..rank).map(|_| self.u32()).collect::<Result<Vec<_>>>()?;
        let n = checked_numel(&s).map_err(|e| dec(e.to_string()))?;
        if n > crate::graph::limits::MAX_TENSOR_ELEMENTS {
            return Err(dec(format!("shape {s:?} is too large")));
        }
        Ok(s)
    }
    fn window(&mut self) -> Result<Window> {
        let mut v = [0usize; 10];
        for x in &mut v {
            *x = self.u32()?;
        }
        Ok(Window {
            kernel: [v[0], v[1]],
            strides: [v[2], v[3]],
            dilations: [v[4], v[5]],
            pads: [v[6], v[7], v[8], v[9]],
        })
    }
    fn layer(&mut self) -> Result<(QWeights, Requant)> {
        let shape = self.shape()?;
        let n = checked_numel(&shape).map_err(|e| dec(e.to_string()))?;
        let out = *shape
            .first()
            .ok_or_else(|| dec("a layer weight has rank 0".into()))?;
        let data = self.vec(n, 1, |s| s[0] as i8)?;
        let scales = self.vec(out, 4, |s| f32::from_le_bytes([s[0], s[1], s[2], s[3]]))?;
        let bias = self.vec(out, 4, |s| i32::from_le_bytes([s[0], s[1], s[2], s[3]]))?;
        let multiplier = self.vec(out, 4, |s| i32::from_le_bytes([s[0], s[1], s[2], s[3]]))?;
        let shift = self.vec(out, 1, |s| s[0] as i8)?;
        let (act_min, act_max) = (self.i8()?, self.i8()?);
        Ok((
            QWeights {
                shape,
                data,
                scales,
                bias,
            },
            Requant {
                multiplier,
                shift,
                act_min,
                act_max,
            },
        ))
    }
    fn node(&mut self) -> Result<QNode> {
        let name = self.str()?;
        let tag = self.u8()?;
        let k = self.u8()? as usize;
        if k > 2 {
            return Err(dec(format!("node `{name}` has {k} inputs")));
        }
        let inputs = (0..k).map(|_| self.u32()).collect::<Result<Vec<_>>>()?;
        let output = self.u32()?;
        let op = match tag {
            1 => {
                let (w, rq) = self.layer()?;
                QOp::Dense { w, rq }
            }
            2 => {
                let groups = self.u32()?;
                let win = self.window()?;
                let (w, rq) = self.layer()?;
                QOp::Conv { w, groups, win, rq }
            }
            3 => QOp::MaxPool(self.window()?),
            4 => {
                let win = self.window()?;
                let count_include_pad = match self.u8()? {
                    0 => false,
                    1 => true,
                    v => return Err(dec(format!("flag {v}"))),
                };
                QOp::AvgPool {
                    win,
                    count_include_pad,
                }
            }
            5 => QOp::GlobalAvgPool,
            6 => QOp::Reshape,
            7 => QOp::Clamp {
                lo: self.i8()?,
                hi: self.i8()?,
            },
            8 => {
                let mut p = [(0i32, 0i8); 3];
                for x in &mut p {
                    *x = (self.i32()?, self.i8()?);
                }
                QOp::Add(QAdd {
                    a: p[0],
                    b: p[1],
                    out: p[2],
                    act_min: self.i8()?,
                    act_max: self.i8()?,
                })
            }
            t => return Err(dec(format!("unknown operator tag {t}"))),
        };
        Ok(QNode {
            name,
            op,
            inputs,
            output,
        })
    }
}

impl QGraph {
    /// Encodes the model (little-endian): magic `LQI8`, version `u8`, input name, preprocessing
    /// (`scale, mean, std` as f32), `u32` value count and per value `scale f32, zero point i8,
    /// rank u8, dims u32…`, `u32` node count and per node `name, tag u8, input count u8, inputs
    /// u32…, output u32` and the operator's fields (layers: weight shape, int8 weights, f32
    /// scales, int32 biases, int32 multipliers, int8 shifts, clamp bounds), then the output value
    /// `u32`. Names are `u32` length + UTF-8.
    pub fn encode(&self) -> Result<Vec<u8>> {
        self.check()?;
        let mut w = Writer(Vec::new());
        w.0.extend_from_slice(MAGIC);
        w.u8(VERSION);
        w.str(&self.input_name)?;
        w.f32(self.preprocess.scale);
        w.f32(self.preprocess.mean);
        w.f32(self.preprocess.std);
        w.u32(self.values.len())?;
        for v in &self.values {
            w.f32(v.q.scale);
            w.i8(v.q.zero_point);
            w.shape(&v.shape)?;
        }
        w.u32(self.nodes.len())?;
        for n in &self.nodes {
            w.node(n)?;
        }
        w.u32(self.output)?;
        Ok(w.0)
    }

    /// Decodes bytes written by [`QGraph::encode`]; every size is checked against the bytes
    /// present and the documented limits before allocating, and the result passes
    /// [`QGraph::check`]. Malformed input gives [`Error::Decode`].
    pub fn decode(bytes: &[u8]) -> Result<QGraph> {
        let mut r = Reader { b: bytes, at: 0 };
        if r.take(4)? != MAGIC {
            return Err(dec("bad magic".into()));
        }
        let v = r.u8()?;
        if v != VERSION {
            return Err(dec(format!("unsupported version {v}")));
        }
        let input_name = r.str()?;
        let preprocess = Preprocess {
            scale: r.f32()?,
            mean: r.f32()?,
            std: r.f32()?,
        };
        let nv = r.u32()?;
        // Each value takes at least 6 bytes, each node at least 10: bound counts by the bytes.
        if nv > crate::graph::limits::MAX_NODES + 1 || nv.saturating_mul(6) > bytes.len() {
            return Err(dec(format!("{nv} values")));
        }
        let mut values = Vec::with_capacity(nv);
        for _ in 0..nv {
            let scale = r.f32()?;
            let zero_point = r.i8()?;
            let shape = r.shape()?;
            values.push(QValue {
                shape,
                q: QParams { scale, zero_point },
            });
        }
        let nn = r.u32()?;
        if nn > crate::graph::limits::MAX_NODES || nn.saturating_mul(10) > bytes.len() {
            return Err(dec(format!("{nn} nodes")));
        }
        let mut nodes = Vec::with_capacity(nn);
        for _ in 0..nn {
            nodes.push(r.node()?);
        }
        let output = r.u32()?;
        if r.at != bytes.len() {
            return Err(dec(format!("{} trailing bytes", bytes.len() - r.at)));
        }
        let q = QGraph {
            input_name,
            preprocess,
            values,
            nodes,
            output,
        };
        q.check().map_err(|e| dec(e.to_string()))?;
        Ok(q)
    }

    /// Bytes of one node's encoding (its weights, biases, scales and requantization included).
    pub fn node_bytes(&self, node: &QNode) -> Result<usize> {
        let mut w = Writer(Vec::new());
        w.node(node)?;
        Ok(w.0.len())
    }

    /// The layer weights as f32 (`scale[c]·q`), in the `[out, …]` layout of [`QWeights`], and the
    /// biases as f32 (`s_in·scale[c]·bias`), for the node named `name`.
    pub fn dequantized_layer(&self, name: &str) -> Option<(Vec<f32>, Vec<f32>)> {
        let n = self.nodes.iter().find(|n| n.name == name)?;
        let w = match &n.op {
            QOp::Dense { w, .. } | QOp::Conv { w, .. } => w,
            _ => return None,
        };
        let s_in = self.values.get(*n.inputs.first()?)?.q.scale;
        let out = w.shape[0];
        let per = w.data.len() / out.max(1);
        let weights = w
            .data
            .iter()
            .enumerate()
            .map(|(i, &q)| w.scales[i / per.max(1)] * q as f32)
            .collect();
        let bias = (0..out)
            .map(|c| (s_in as f64 * w.scales[c] as f64 * w.bias[c] as f64) as f32)
            .collect();
        Some((weights, bias))
    }
}

// ---------------------------------------------------------------------------------------------
// The `int8` pass.
// ---------------------------------------------------------------------------------------------

/// The `int8` pass: builds the [`QGraph`] calibrated on `ctx.data` (the recipe's training
/// data), stores it in `ctx.int8`, and rewrites `g` into the float graph it mirrors (BatchNorm
/// folded, weights and biases replaced by their dequantized int8/int32 values) so that float
/// evaluation of the result approximates it. `bytes_after` is the length of
/// [`QGraph::encode`]; [`super::Recipe::apply`] takes `accuracy_after` from the integer
/// executor.
pub(super) fn pass(
    g: &mut Graph,
    ctx: &mut super::PassCtx,
    spec: &Int8Spec,
    bytes_before: usize,
    macs_before: u64,
) -> Result<super::PassReport> {
    spec.check()?;
    if !ctx.quantized.is_empty() || !ctx.shared.is_empty() || !ctx.lowbit.is_empty() {
        return Err(Error::Invalid(
            "int8 quantizes float weights itself: run it instead of quantize/share/lowbit/qat"
                .into(),
        ));
    }
    let data = ctx.data.ok_or_else(|| {
        Error::Invalid("the int8 pass calibrates on the training data; none was given".into())
    })?;
    let before_targets = super::targets(g);
    let before: Vec<usize> = before_targets
        .iter()
        .map(|t| super::storage(&t.weight, g, ctx).map(|s| s.2))
        .collect::<Result<_>>()?;
    let q = QGraph::build(g, data, spec)?;
    crate::graph::fold::fold_batchnorm(g)?;
    // Write the dequantized weights back in each node's own layout.
    for i in 0..g.nodes.len() {
        let n = &g.nodes[i];
        let Some((wq, bq)) = q.dequantized_layer(&n.name) else {
            continue;
        };
        let (wname, bname) = (n.inputs[1].clone(), n.inputs.get(2).cloned());
        let Some(old) = g.weights.get(&wname) else {
            continue;
        };
        let shape = old.shape().to_vec();
        let (alpha, beta, transposed) = match &n.op {
            Op::Gemm(a) => (a.alpha, a.beta, !a.trans_b),
            Op::MatMul => (1.0, 1.0, true),
            _ => (1.0, 1.0, false),
        };
        if alpha == 0.0 || beta == 0.0 {
            continue;
        }
        let w = if transposed {
            // Stored as [in, out]; the quantized layer is [out, in].
            let (fin, fout) = (shape[0], shape[1]);
            let mut t = vec![0.0f32; fin * fout];
            for o in 0..fout {
                for k in 0..fin {
                    t[k * fout + o] = wq[o * fin + k] / alpha;
                }
            }
            t
        } else {
            wq.iter().map(|v| v / alpha).collect()
        };
        g.weights.insert(wname, crate::tensor::from_vec(&shape, w)?);
        if let Some(b) = bname.filter(|b| !b.is_empty())
            && let Some(old) = g.weights.get(&b)
            && old.len() == bq.len()
        {
            let shape = old.shape().to_vec();
            let v = bq.iter().map(|v| v / beta).collect();
            g.weights.insert(b, crate::tensor::from_vec(&shape, v)?);
        }
    }
    let tg = super::targets(g);
    let mut layers = Vec::with_capacity(tg.len());
    let (mut zeros, mut total) = (0usize, 0usize);
    for t in &tg {
        let Some(node) = q.nodes.iter().find(|n| n.name == t.node) else {
            continue;
        };
        let (QOp::Dense { w, .. } | QOp::Conv { w, .. }) = &node.op else {
            continue;
        };
        let nonzero = w.data.iter().filter(|v| **v != 0).count();
        zeros += w.data.len() - nonzero;
        total += w.data.len();
        let b = before_targets
            .iter()
            .position(|x| x.weight == t.weight)
            .map_or(0, |i| before[i]);
        layers.push(super::LayerReport {
            name: t.weight.clone(),
            node: t.node.clone(),
            params: w.data.len(),
            nonzero,
            bits: 8,
            bytes_before: b,
            bytes_after: q.node_bytes(node)?,
            encoding: "int8 sym per-channel, int32 bias, Q31 requant (integer-only)".into(),
        });
    }
    let bytes_after = q.encode()?.len();
    ctx.int8 = Some(q);
    Ok(super::PassReport {
        pass: "int8".into(),
        layers,
        bytes_before,
        bytes_after,
        macs_before,
        macs_after: super::effective_macs(g, &tg)?,
        sparsity: if total == 0 {
            0.0
        } else {
            zeros as f32 / total as f32
        },
        accuracy_before: None,
        accuracy_after: None,
    })
}

#[cfg(test)]
mod executor_twins {
    //! The executor's original nested loops, kept as the twins of the int8-kernel paths.

    use super::*;
    use crate::rng::Rng;

    /// `z_out + M·acc`, clamped to the fused activation bounds.
    fn requantize(acc: i32, m0: i32, shift: i8, zo: i32, lo: i8, hi: i8) -> i8 {
        multiply_by_quantized_multiplier(acc, m0, shift as i32)
            .saturating_add(zo)
            .clamp(lo as i32, hi as i32) as i8
    }

    fn dense_int_loops(
        x: &[i8],
        n: usize,
        zx: i32,
        w: &QWeights,
        rq: &Requant,
        zo: i32,
    ) -> Vec<i8> {
        let (fout, fin) = (w.shape[0], w.shape[1]);
        let mut y = Vec::with_capacity(n * fout);
        for b in 0..n {
            let xr = &x[b * fin..(b + 1) * fin];
            for o in 0..fout {
                let wr = &w.data[o * fin..(o + 1) * fin];
                let mut acc: i32 = 0;
                for (xv, wv) in xr.iter().zip(wr) {
                    acc += (*xv as i32 - zx) * (*wv as i32);
                }
                let acc = acc.saturating_add(w.bias[o]);
                y.push(requantize(
                    acc,
                    rq.multiplier[o],
                    rq.shift[o],
                    zo,
                    rq.act_min,
                    rq.act_max,
                ));
            }
        }
        y
    }

    #[allow(clippy::too_many_arguments)]
    fn conv_int_loops(
        x: &[i8],
        n: usize,
        xs: &[usize],
        ys: &[usize],
        zx: i32,
        w: &QWeights,
        groups: usize,
        win: &Window,
        rq: &Requant,
        zo: i32,
    ) -> Vec<i8> {
        let (c, h, wd) = (xs[0], xs[1], xs[2]);
        let (m, oh, ow) = (ys[0], ys[1], ys[2]);
        let (cg, kh, kw) = (w.shape[1], w.shape[2], w.shape[3]);
        let mg = m / groups;
        let rows: Vec<Span> = (0..oh)
            .map(|o| span(o, win.strides[0], win.dilations[0], win.pads[0], h, kh))
            .collect();
        let cols: Vec<Span> = (0..ow)
            .map(|o| span(o, win.strides[1], win.dilations[1], win.pads[1], wd, kw))
            .collect();
        let dw = win.dilations[1];
        let mut y = Vec::with_capacity(n * m * oh * ow);
        for b in 0..n {
            let xb = &x[b * c * h * wd..(b + 1) * c * h * wd];
            for oc in 0..m {
                let g = oc / mg;
                let wo = &w.data[oc * cg * kh * kw..(oc + 1) * cg * kh * kw];
                for r in &rows {
                    for q in &cols {
                        let mut acc: i32 = 0;
                        for ci in 0..cg {
                            let plane = &xb[(g * cg + ci) * h * wd..(g * cg + ci + 1) * h * wd];
                            for (j, ky) in (r.lo..r.hi).enumerate() {
                                let iy = r.first + j * win.dilations[0];
                                let xrow = &plane[iy * wd..(iy + 1) * wd];
                                let wrow = &wo[(ci * kh + ky) * kw..(ci * kh + ky + 1) * kw];
                                for (i, wv) in wrow[q.lo..q.hi].iter().enumerate() {
                                    acc += (xrow[q.first + i * dw] as i32 - zx) * *wv as i32;
                                }
                            }
                        }
                        let acc = acc.saturating_add(w.bias[oc]);
                        y.push(requantize(
                            acc,
                            rq.multiplier[oc],
                            rq.shift[oc],
                            zo,
                            rq.act_min,
                            rq.act_max,
                        ));
                    }
                }
            }
        }
        y
    }

    fn codes(rng: &mut Rng, len: usize, lo: i32) -> Vec<i8> {
        (0..len)
            .map(|_| ((rng.uniform() * (128 - lo) as f32) as i32 + lo).clamp(lo, 127) as i8)
            .collect()
    }

    fn layer(rng: &mut Rng, shape: Vec<usize>, k: usize) -> (QWeights, Requant) {
        let out = shape[0];
        let data = codes(rng, shape.iter().product(), -127);
        let mut multiplier = Vec::new();
        let mut shift = Vec::new();
        for _ in 0..out {
            let real = (0.2 + rng.uniform() as f64) / (k.max(1) as f64 * 40.0);
            let (m0, s) = quantize_multiplier(real).unwrap();
            multiplier.push(m0);
            shift.push(s as i8);
        }
        let bias = (0..out).map(|_| (rng.normal() * 3000.0) as i32).collect();
        let w = QWeights {
            shape,
            data,
            scales: vec![0.01; out],
            bias,
        };
        let lo = if rng.uniform() < 0.5 { -128 } else { -20 };
        let rq = Requant {
            multiplier,
            shift,
            act_min: lo,
            act_max: 120,
        };
        (w, rq)
    }

    #[test]
    fn dense_on_the_int8_kernel_equals_the_loops() {
        let mut rng = Rng::new(77);
        for &(n, fin, fout) in &[
            (1, 1, 1),
            (3, 17, 5),
            (1, 784, 300),
            (7, 300, 100),
            (2, 0, 3),
        ] {
            for zx in [-128, -3, 0, 127] {
                let (w, rq) = layer(&mut rng, vec![fout, fin], fin);
                let x = codes(&mut rng, n * fin, -128);
                let want = dense_int_loops(&x, n, zx, &w, &rq, 5);
                let distinct: HashSet<i8> = want.iter().copied().collect();
                assert!(want.len() < 8 || distinct.len() > 3, "{distinct:?}");
                assert_eq!(dense_int(&x, n, zx, &w, &rq, 5).unwrap(), want);
            }
        }
    }

    /// (C, H, W, M, groups, kh, kw, stride, dilation, pads).
    type ConvCase = (
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        [usize; 4],
    );

    #[test]
    fn conv_on_the_int8_kernel_equals_the_loops() {
        let mut rng = Rng::new(78);
        // (C, H, W, M, groups, kh, kw, stride, dilation, pads)
        let cases: &[ConvCase] = &[
            (1, 5, 5, 2, 1, 3, 3, 1, 1, [0; 4]),
            (3, 7, 6, 4, 1, 3, 2, 2, 1, [1, 0, 2, 1]),
            (4, 6, 6, 4, 4, 3, 3, 1, 1, [1; 4]),
            (4, 9, 8, 6, 2, 3, 3, 2, 2, [2, 1, 0, 3]),
            (2, 3, 3, 3, 1, 5, 5, 1, 1, [2; 4]),
            (1, 28, 28, 6, 1, 5, 5, 1, 1, [2; 4]),
        ];
        for &(c, h, wd, m, groups, kh, kw, s, d, pads) in cases {
            let win = Window {
                kernel: [kh, kw],
                strides: [s, s],
                dilations: [d, d],
                pads,
            };
            let out = |size: usize, a: usize, k: usize| {
                (size + pads[a] + pads[a + 2] - d * (k - 1) - 1) / s + 1
            };
            let ys = [m, out(h, 0, kh), out(wd, 1, kw)];
            let xs = [c, h, wd];
            let cg = c / groups;
            for (n, zx) in [(1, -128), (2, 7), (3, 127)] {
                let (w, rq) = layer(&mut rng, vec![m, cg, kh, kw], cg * kh * kw);
                let x = codes(&mut rng, n * c * h * wd, -128);
                let want = conv_int_loops(&x, n, &xs, &ys, zx, &w, groups, &win, &rq, -4);
                let distinct: HashSet<i8> = want.iter().copied().collect();
                assert!(distinct.len() > 3, "{distinct:?}");
                let got = conv_int(&x, n, &xs, &ys, zx, &w, groups, &win, &rq, -4).unwrap();
                assert_eq!(got, want, "{c}×{h}×{wd} → {ys:?}, groups {groups}");
            }
        }
    }

    /// The kernel taps `lo..hi` of one axis that land inside the input for one output position,
    /// and the input index of tap `lo`.
    struct Span {
        lo: usize,
        hi: usize,
        first: usize,
    }

    fn span(o: usize, stride: usize, dil: usize, pad: usize, size: usize, k: usize) -> Span {
        let start = o * stride;
        let lo = if start >= pad {
            0
        } else {
            (pad - start).div_ceil(dil)
        };
        let hi = (pad + size)
            .checked_sub(start)
            .map_or(0, |room| room.div_ceil(dil))
            .min(k);
        if lo >= hi {
            return Span {
                lo: 0,
                hi: 0,
                first: 0,
            };
        }
        Span {
            lo,
            hi,
            first: start + lo * dil - pad,
        }
    }
}

//! Quantization and integer ops: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear,
//! QLinearConv, QLinearMatMul, MatMulInteger, ConvInteger and Cast.
//!
//! # How integer values are carried
//!
//! Graph values are `f32` tensors. An integer value (int8, uint8, int32) is held as exact
//! integers in an `f32` tensor, and its element type is tracked on the graph: every op declares
//! the type of each input and output ([`Op::input_dtype`], [`Op::output_dtype`]), the importer
//! checks them, and [`crate::graph::Graph::dtypes`] derives the type of every value. int8 and
//! uint8 are always exact; int32 is exact for `|v| ≤ 2^24` ([`crate::tensor::F32_EXACT_INT`]).
//! An int32 accumulator beyond that (a ConvInteger or MatMulInteger output) is rounded to the
//! nearest `f32` when it is stored, which is exactly what the `Cast` to float that follows it in
//! ONNX's dynamic-quantization pattern does; DequantizeLinear converts int32 to `f32` first too,
//! as ONNX's reference does.
//!
//! # How they compute
//!
//! The integer ops compute in integer arithmetic: the inputs are read back as `i32` (each value
//! checked to be an integer of the declared type, so a mislabelled input is an error, not a
//! silent truncation), zero points are subtracted in `i32`, products are accumulated in `i32`
//! (wrapping on overflow, which needs more than ~33 000 terms of 255·255). QLinearConv and
//! QLinearMatMul requantize as ONNX specifies: the accumulator times `x_scale·w_scale/y_scale`
//! (the multiplier in `f32`, the product in `f64`, as the ONNX reference computes it), rounded
//! half to even, plus the output zero point, saturated to the output type. QuantizeLinear
//! computes `x / scale` in `f32`, rounds half to even, adds the zero point and saturates.
//!
//! Scales must be positive and finite; zero points must have the type of the data they belong to
//! and the shape of their scale. There is no training through these ops: [`backward`] returns an
//! error.

use super::{broadcast_shape, conv, get, linear, norm_axis, opt};
use crate::graph::{Node, Op};
use crate::kernels;
use crate::tensor::{self, DType, Tensor};
use crate::{Error, Result};
use ndarray::IxDyn;

mod prepared;
pub(crate) use prepared::{Prepared, packed_matmul_applies, weight_slots};

fn invalid(node: &Node, detail: impl std::fmt::Display) -> Error {
    Error::Invalid(format!(
        "node `{}` ({}): {detail}",
        node.name,
        node.op.name()
    ))
}

/// The values of an integer-typed input as `i32`, checking that each is an integer of `dt`.
fn ints(node: &Node, t: &Tensor, dt: DType, what: &str) -> Result<Vec<i32>> {
    let (lo, hi) = match dt {
        DType::I8 => (-128, 127),
        DType::U8 => (0, 255),
        DType::I32 => (i64::from(i32::MIN), i64::from(i32::MAX)),
        other => {
            return Err(invalid(
                node,
                format!("{what} has element type {other}, which is not an integer type it reads"),
            ));
        }
    };
    let data = tensor::to_contiguous(t);
    let mut out = Vec::with_capacity(data.len());
    for &v in data.iter() {
        // `as` saturates (NaN gives 0), so a value that survives the round trip is an integer.
        let iv = v as i64;
        if !(iv as f32 == v && (lo..=hi).contains(&iv)) {
            return Err(invalid(
                node,
                format!("{what} must hold {dt} values, found {v}"),
            ));
        }
        out.push(iv as i32);
    }
    Ok(out)
}

/// The values of a scale input, each positive and finite.
fn scales(node: &Node, t: &Tensor, what: &str) -> Result<Vec<f32>> {
    let data = tensor::to_contiguous(t).into_owned();
    if let Some(v) = data.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
        return Err(invalid(
            node,
            format!("{what} must be positive and finite, found {v}"),
        ));
    }
    Ok(data)
}

/// Saturates an integer to the range of `dt` (int8 or uint8).
fn saturate(v: i64, dt: DType) -> i64 {
    match dt.range() {
        Some((lo, hi)) => v.clamp(lo, hi),
        None => v,
    }
}

/// Rounds half to even and saturates to `dt`; NaN maps to 0.
fn round_sat(v: f64, dt: DType) -> f32 {
    let r = v.round_ties_even();
    // `as` saturates and maps NaN to 0.
    saturate(r as i64, dt) as f32
}

/// Per-tensor or per-axis parameters of QuantizeLinear/DequantizeLinear: the axis and the number
/// of parameters along it (1 for per-tensor).
fn axis_params(
    node: &Node,
    axis: i64,
    x: &[usize],
    scale: &[usize],
    zp: Option<&[usize]>,
) -> Result<(usize, usize)> {
    let count = tensor::checked_numel(scale)?;
    if let Some(z) = zp
        && z != scale
        && !(tensor::checked_numel(z)? == 1 && count == 1)
    {
        return Err(Error::shape(
            &node.name,
            node.op.name(),
            "the zero point must have the shape of the scale",
            &[scale, z],
        ));
    }
    if count == 1 && scale.len() <= 1 {
        return Ok((0, 1));
    }
    if scale.len() != 1 {
        return Err(Error::shape(
            &node.name,
            node.op.name(),
            "the scale must be a scalar or a 1-D tensor (blocked quantization is not supported)",
            &[x, scale],
        ));
    }
    let a = norm_axis(node, axis, x.len(), "axis")?;
    if x[a] != count {
        return Err(Error::shape(
            &node.name,
            node.op.name(),
            format!(
                "a per-axis scale along axis {a} needs {} values, got {count}",
                x[a]
            ),
            &[x, scale],
        ));
    }
    Ok((a, count))
}

/// A per-tensor (scalar or one-element) or per-channel (`[len]`) parameter.
fn check_vec(node: &Node, what: &str, s: &[usize], len: usize, ctx: &[usize]) -> Result<()> {
    let n = tensor::checked_numel(s)?;
    let ok = (n == 1 && s.len() <= 1) || (s.len() == 1 && s[0] == len);
    if !ok {
        return Err(Error::shape(
            &node.name,
            node.op.name(),
            format!("{what} must be a scalar or have {len} values"),
            &[ctx, s],
        ));
    }
    Ok(())
}

fn check_scalar(node: &Node, what: &str, s: &[usize]) -> Result<()> {
    if tensor::checked_numel(s)? != 1 || s.len() > 1 {
        return Err(Error::shape(
            &node.name,
            node.op.name(),
            format!("{what} must be a scalar"),
            &[s],
        ));
    }
    Ok(())
}

/// Output shapes of a quantization op (all its outputs).
pub(super) fn quant_shape(node: &Node, shapes: &[Option<&[usize]>]) -> Result<Vec<Vec<usize>>> {
    let need = |i: usize| -> Result<&[usize]> {
        shapes.get(i).copied().flatten().ok_or_else(|| {
            Error::Graph(format!(
                "node `{}` ({}) is missing input #{i}",
                node.name,
                node.op.name()
            ))
        })
    };
    let maybe = |i: usize| shapes.get(i).copied().flatten();
    let x = need(0)?;
    Ok(match &node.op {
        Op::QuantizeLinear { axis, .. } | Op::DequantizeLinear { axis, .. } => {
            axis_params(node, *axis, x, need(1)?, maybe(2))?;
            vec![x.to_vec()]
        }
        Op::DynamicQuantizeLinear => vec![x.to_vec(), vec![], vec![]],
        Op::Cast { .. } => vec![x.to_vec()],
        Op::QLinearConv { conv: a, .. } => {
            let w = need(3)?;
            let out = conv::conv_shape(node, a, x, w, maybe(8))?;
            let m = out[1];
            check_scalar(node, "x_scale", need(1)?)?;
            check_vec(node, "w_scale", need(4)?, m, w)?;
            check_scalar(node, "y_scale", need(6)?)?;
            for (i, what) in [(2, "x_zero_point"), (7, "y_zero_point")] {
                if let Some(s) = maybe(i) {
                    check_scalar(node, what, s)?;
                }
            }
            if let Some(s) = maybe(5) {
                check_vec(node, "w_zero_point", s, m, w)?;
            }
            vec![out]
        }
        Op::ConvInteger { conv: a, .. } => {
            let w = need(1)?;
            let out = conv::conv_shape(node, a, x, w, None)?;
            if let Some(s) = maybe(2) {
                check_scalar(node, "x_zero_point", s)?;
            }
            if let Some(s) = maybe(3) {
                check_vec(node, "w_zero_point", s, out[1], w)?;
            }
            vec![out]
        }
        Op::QLinearMatMul { .. } => {
            let b = need(3)?;
            let out = linear::matmul_shape(node, x, b)?;
            let n = cols(b);
            check_scalar(node, "a_scale", need(1)?)?;
            check_vec(node, "b_scale", need(4)?, n, b)?;
            check_scalar(node, "y_scale", need(6)?)?;
            for (i, what) in [(2, "a_zero_point"), (7, "y_zero_point")] {
                if let Some(s) = maybe(i) {
                    check_scalar(node, what, s)?;
                }
            }
            if let Some(s) = maybe(5) {
                check_vec(node, "b_zero_point", s, n, b)?;
            }
            vec![out]
        }
        Op::MatMulInteger { .. } => {
            let b = need(1)?;
            let out = linear::matmul_shape(node, x, b)?;
            let rows = if x.len() >= 2 { x[x.len() - 2] } else { 1 };
            if let Some(s) = maybe(2) {
                check_vec(node, "a_zero_point", s, rows, x)?;
            }
            if let Some(s) = maybe(3) {
                check_vec(node, "b_zero_point", s, cols(b), b)?;
            }
            vec![out]
        }
        _ => {
            return Err(Error::Graph(format!(
                "node `{}` ({}) is not a quantization op",
                node.name,
                node.op.name()
            )));
        }
    })
}

/// Runs a quantization op; returns all its outputs.
pub(super) fn forward(node: &Node, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let shapes: Vec<Option<&[usize]>> = inputs.iter().map(|t| t.map(|t| t.shape())).collect();
    quant_shape(node, &shapes)?;
    let x = get(node, inputs, 0)?;
    match &node.op {
        Op::QuantizeLinear { axis, to } => {
            let s = scales(node, get(node, inputs, 1)?, "y_scale")?;
            let zp = match opt(inputs, 2) {
                Some(z) => ints(node, z, *to, "y_zero_point")?,
                None => vec![0; s.len()],
            };
            let (a, count) =
                axis_params(node, *axis, x.shape(), get(node, inputs, 1)?.shape(), None)?;
            let inner: usize = x.shape().get(a + 1..).unwrap_or(&[]).iter().product();
            let xs = tensor::to_contiguous(x);
            let y: Vec<f32> = xs
                .iter()
                .enumerate()
                .map(|(e, &v)| {
                    let c = if count == 1 { 0 } else { (e / inner) % count };
                    let q = (v / s[c]).round_ties_even() as i64;
                    saturate(q.saturating_add(i64::from(zp[c])), *to) as f32
                })
                .collect();
            Ok(vec![tensor::from_vec(x.shape(), y)?])
        }
        Op::DequantizeLinear { axis, from } => {
            let s = scales(node, get(node, inputs, 1)?, "x_scale")?;
            let zp = match opt(inputs, 2) {
                Some(z) => ints(node, z, *from, "x_zero_point")?,
                None => vec![0; s.len()],
            };
            let xi = ints(node, x, *from, "x")?;
            let (a, count) =
                axis_params(node, *axis, x.shape(), get(node, inputs, 1)?.shape(), None)?;
            let inner: usize = x.shape().get(a + 1..).unwrap_or(&[]).iter().product();
            let y: Vec<f32> = xi
                .iter()
                .enumerate()
                .map(|(e, &v)| {
                    let c = if count == 1 { 0 } else { (e / inner) % count };
                    (v as f32 - zp[c] as f32) * s[c]
                })
                .collect();
            Ok(vec![tensor::from_vec(x.shape(), y)?])
        }
        Op::DynamicQuantizeLinear => dynamic_quantize(node, x),
        Op::Cast { from, to } => cast(node, x, *from, *to),
        Op::QLinearConv {
            conv: a,
            x: tx,
            w: tw,
            y: ty,
        } => {
            let w = get(node, inputs, 3)?;
            let g = conv::geometry(node, a, x.shape(), w.shape())?;
            let xzp = scalar_zp(node, opt(inputs, 2), *tx, "x_zero_point")?;
            let wzp = vec_zp(node, opt(inputs, 5), *tw, "w_zero_point", g.m)?;
            let bias = match opt(inputs, 8) {
                Some(b) => Some(ints(node, b, DType::I32, "B")?),
                None => None,
            };
            let acc = conv_i32(node, &g, x, w, *tx, *tw, xzp, &wzp, bias.as_deref())?;
            let xs = scalar_scale(node, get(node, inputs, 1)?, "x_scale")?;
            let ws = scales(node, get(node, inputs, 4)?, "w_scale")?;
            let ys = scalar_scale(node, get(node, inputs, 6)?, "y_scale")?;
            let yzp = scalar_zp(node, opt(inputs, 7), *ty, "y_zero_point")?;
            let plane = g.oh * g.ow;
            let y: Vec<f32> = acc
                .iter()
                .enumerate()
                .map(|(e, &v)| {
                    let m = (e / plane.max(1)) % g.m.max(1);
                    let mult = xs * ws[if ws.len() == 1 { 0 } else { m }] / ys;
                    round_sat(f64::from(v) * f64::from(mult) + f64::from(yzp), *ty)
                })
                .collect();
            Ok(vec![tensor::from_vec(&[g.n, g.m, g.oh, g.ow], y)?])
        }
        Op::ConvInteger {
            conv: a,
            x: tx,
            w: tw,
        } => {
            let w = get(node, inputs, 1)?;
            let g = conv::geometry(node, a, x.shape(), w.shape())?;
            let xzp = scalar_zp(node, opt(inputs, 2), *tx, "x_zero_point")?;
            let wzp = vec_zp(node, opt(inputs, 3), *tw, "w_zero_point", g.m)?;
            let acc = conv_i32(node, &g, x, w, *tx, *tw, xzp, &wzp, None)?;
            let y = acc.into_iter().map(|v| v as f32).collect();
            Ok(vec![tensor::from_vec(&[g.n, g.m, g.oh, g.ow], y)?])
        }
        Op::QLinearMatMul { a: ta, b: tb, .. } => {
            let b = get(node, inputs, 3)?;
            let n = cols(b.shape());
            let azp = scalar_zp(node, opt(inputs, 2), *ta, "a_zero_point")?;
            let bzp = vec_zp(node, opt(inputs, 5), *tb, "b_zero_point", n)?;
            let (shape, acc) = matmul_i32(node, x, b, *ta, *tb, &[azp], &bzp)?;
            Ok(vec![finish_matmul(node, inputs, &shape, n, &acc)?])
        }
        Op::MatMulInteger { a: ta, b: tb } => {
            let b = get(node, inputs, 1)?;
            let rows = if x.ndim() >= 2 {
                x.shape()[x.ndim() - 2]
            } else {
                1
            };
            let n = cols(b.shape());
            let azp = vec_zp(node, opt(inputs, 2), *ta, "a_zero_point", rows)?;
            let bzp = vec_zp(node, opt(inputs, 3), *tb, "b_zero_point", n)?;
            let (shape, acc) = matmul_i32(node, x, b, *ta, *tb, &azp, &bzp)?;
            Ok(vec![finish_matmul(node, inputs, &shape, n, &acc)?])
        }
        _ => Err(Error::Graph(format!(
            "node `{}` ({}) is not a quantization op",
            node.name,
            node.op.name()
        ))),
    }
}

/// Columns of a matmul's right operand (a 1-D operand is one column).
fn cols(b: &[usize]) -> usize {
    if b.len() >= 2 { b[b.len() - 1] } else { 1 }
}

/// The output of a `MatMulInteger` (the sums as exact integers in `f32`) or a `QLinearMatMul`
/// (the sums rescaled by `a_scale · b_scale / y_scale`, rounded half to even, plus the output
/// zero point, saturated) from its `i32` sums `acc` of output shape `shape`, for `n` columns of
/// `B`. The planned int8 kernels and the WebGPU backend compute the sums their own way and
/// finish here, so all three give the same bits.
pub(crate) fn finish_matmul(
    node: &Node,
    inputs: &[Option<&Tensor>],
    shape: &[usize],
    n: usize,
    acc: &[i32],
) -> Result<Tensor> {
    match &node.op {
        Op::MatMulInteger { .. } => {
            tensor::from_vec(shape, acc.iter().map(|&v| v as f32).collect())
        }
        Op::QLinearMatMul { y: ty, .. } => {
            let as_ = scalar_scale(node, get(node, inputs, 1)?, "a_scale")?;
            let bs = scales(node, get(node, inputs, 4)?, "b_scale")?;
            let ys = scalar_scale(node, get(node, inputs, 6)?, "y_scale")?;
            let yzp = scalar_zp(node, opt(inputs, 7), *ty, "y_zero_point")?;
            if bs.len() != 1 && bs.len() != n {
                return Err(invalid(node, format!("b_scale has {} values", bs.len())));
            }
            let y: Vec<f32> = acc
                .iter()
                .enumerate()
                .map(|(e, &v)| {
                    let j = if bs.len() == 1 { 0 } else { e % n.max(1) };
                    let mult = as_ * bs[j] / ys;
                    round_sat(f64::from(v) * f64::from(mult) + f64::from(yzp), *ty)
                })
                .collect();
            tensor::from_vec(shape, y)
        }
        _ => Err(Error::Graph(format!(
            "node `{}` ({}) is not an integer matmul",
            node.name,
            node.op.name()
        ))),
    }
}

fn scalar_scale(node: &Node, t: &Tensor, what: &str) -> Result<f32> {
    scales(node, t, what)?
        .first()
        .copied()
        .ok_or_else(|| invalid(node, format!("{what} is empty")))
}

fn scalar_zp(node: &Node, t: Option<&Tensor>, dt: DType, what: &str) -> Result<i32> {
    match t {
        None => Ok(0),
        Some(t) => Ok(ints(node, t, dt, what)?.first().copied().unwrap_or(0)),
    }
}

/// A zero point with one value or `len` values, expanded to `len`.
fn vec_zp(node: &Node, t: Option<&Tensor>, dt: DType, what: &str, len: usize) -> Result<Vec<i32>> {
    let v = match t {
        None => vec![0],
        Some(t) => ints(node, t, dt, what)?,
    };
    match v.len() {
        1 => Ok(vec![v[0]; len]),
        n if n == len => Ok(v),
        n => Err(invalid(
            node,
            format!("{what} has {n} values, expected 1 or {len}"),
        )),
    }
}

/// Integer convolution: `Σ (x − x_zp)·(w − w_zp[m]) (+ B[m])`, accumulated in `i32`.
#[allow(clippy::too_many_arguments)]
fn conv_i32(
    node: &Node,
    g: &conv::Geometry,
    x: &Tensor,
    w: &Tensor,
    tx: DType,
    tw: DType,
    xzp: i32,
    wzp: &[i32],
    bias: Option<&[i32]>,
) -> Result<Vec<i32>> {
    let xi: Vec<i32> = ints(node, x, tx, "x")?
        .into_iter()
        .map(|v| v.wrapping_sub(xzp))
        .collect();
    let wi = ints(node, w, tw, "w")?;
    let cg = g.c / g.groups;
    let mg = g.m / g.groups;
    let ksz = cg * g.kh * g.kw;
    let plane = g.oh * g.ow;
    let n_out = tensor::checked_numel(&[g.n, g.m, g.oh, g.ow])?;
    let mut out = vec![0i32; n_out];
    for n in 0..g.n {
        for m in 0..g.m {
            let grp = m / mg.max(1);
            let acc = &mut out[(n * g.m + m) * plane..(n * g.m + m + 1) * plane];
            if let Some(b) = bias {
                acc.fill(b[m]);
            }
            for ci in 0..cg {
                let c = grp * cg + ci;
                let xc = &xi[(n * g.c + c) * g.h * g.w..(n * g.c + c + 1) * g.h * g.w];
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        let wv = wi[m * ksz + (ci * g.kh + ky) * g.kw + kx].wrapping_sub(wzp[m]);
                        if wv == 0 {
                            continue;
                        }
                        // Output columns whose input column lies inside the row.
                        let off = kx * g.dw;
                        let lo = g.pl.saturating_sub(off).div_ceil(g.sw);
                        let hi = (g.w + g.pl)
                            .checked_sub(off + 1)
                            .map_or(0, |v| (v / g.sw + 1).min(g.ow));
                        if lo >= hi {
                            continue;
                        }
                        // Input column of output column `lo` (non-negative by the choice of lo).
                        let first = lo * g.sw + off - g.pl;
                        for oy in 0..g.oh {
                            let iy = (oy * g.sh + ky * g.dh) as isize - g.pt as isize;
                            if iy < 0 || iy >= g.h as isize {
                                continue;
                            }
                            let row = &xc[iy as usize * g.w..(iy as usize + 1) * g.w];
                            let arow = &mut acc[oy * g.ow + lo..oy * g.ow + hi];
                            if g.sw == 1 {
                                // Contiguous: lets the compiler vectorize.
                                let src = &row[first..first + arow.len()];
                                for (a, &xv) in arow.iter_mut().zip(src) {
                                    *a = a.wrapping_add(wv.wrapping_mul(xv));
                                }
                            } else {
                                let src = row[first..].iter().step_by(g.sw);
                                for (a, &xv) in arow.iter_mut().zip(src) {
                                    *a = a.wrapping_add(wv.wrapping_mul(xv));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Integer matrix product with numpy batching: `Σ (a − a_zp[row])·(b − b_zp[col])` in `i32`.
/// `azp` has one value or one per row of `a`; `bzp` one value per column of `b`.
fn matmul_i32(
    node: &Node,
    a: &Tensor,
    b: &Tensor,
    ta: DType,
    tb: DType,
    azp: &[i32],
    bzp: &[i32],
) -> Result<(Vec<usize>, Vec<i32>)> {
    let out_shape = linear::matmul_shape(node, a.shape(), b.shape())?;
    let sa: Vec<usize> = if a.ndim() == 1 {
        vec![1, a.shape()[0]]
    } else {
        a.shape().to_vec()
    };
    let sb: Vec<usize> = if b.ndim() == 1 {
        vec![b.shape()[0], 1]
    } else {
        b.shape().to_vec()
    };
    let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
    let n = sb[sb.len() - 1];
    let batch = broadcast_shape(&sa[..sa.len() - 2], &sb[..sb.len() - 2]).ok_or_else(|| {
        Error::shape(
            &node.name,
            node.op.name(),
            "batch dimensions do not broadcast",
            &[a.shape(), b.shape()],
        )
    })?;
    let bcast = |t: &Tensor, s: &[usize], rows: usize, cols: usize| -> Result<Tensor> {
        let mut full = batch.clone();
        full.extend([rows, cols]);
        let v = t
            .view()
            .into_shape_with_order(IxDyn(s))
            .map_err(|e| invalid(node, e))?;
        v.broadcast(IxDyn(&full))
            .map(|v| v.to_owned())
            .ok_or_else(|| invalid(node, "operands do not broadcast"))
    };
    let (ai, bi) = if batch.is_empty() {
        (ints(node, a, ta, "A")?, ints(node, b, tb, "B")?)
    } else {
        (
            ints(node, &bcast(a, &sa, m, k)?, ta, "A")?,
            ints(node, &bcast(b, &sb, k, n)?, tb, "B")?,
        )
    };
    let nb: usize = batch.iter().product();
    let n_out = tensor::checked_numel(&[nb, m, n])?;
    let mut out = vec![0i32; n_out];
    if azp.len() == 1 {
        // One zero point for A: the int8 GEMM kernel (exact, the same wrapping i32 sums).
        for t in 0..nb {
            gemm_kernel(
                &ai[t * m * k..(t + 1) * m * k],
                azp[0],
                &bi[t * k * n..(t + 1) * k * n],
                bzp,
                (m, k, n),
                &mut out[t * m * n..(t + 1) * m * n],
            )?;
        }
        return Ok((out_shape, out));
    }
    let mut brow = vec![0i32; n];
    for t in 0..nb {
        for i in 0..m {
            let za = azp[if azp.len() == 1 { 0 } else { i }];
            let acc = &mut out[(t * m + i) * n..(t * m + i + 1) * n];
            for p in 0..k {
                let av = ai[(t * m + i) * k + p].wrapping_sub(za);
                if av == 0 {
                    continue;
                }
                let src = &bi[(t * k + p) * n..(t * k + p + 1) * n];
                for ((d, &s), &z) in brow.iter_mut().zip(src).zip(bzp) {
                    *d = s.wrapping_sub(z);
                }
                for (o, &bv) in acc.iter_mut().zip(&brow) {
                    *o = o.wrapping_add(av.wrapping_mul(bv));
                }
            }
        }
    }
    Ok((out_shape, out))
}

/// `C = (A − a_zp)·(B − b_zp[col])` for one `m×k` by `k×n` pair on [`kernels::int8`]: the values
/// are int8 or uint8 codes held in `i32`, and both operands of a pair share their type.
fn gemm_kernel(
    a: &[i32],
    azp: i32,
    b: &[i32],
    bzp: &[i32],
    (m, k, n): (usize, usize, usize),
    c: &mut [i32],
) -> Result<()> {
    // A uint8 operand shows as codes above 127 somewhere (or a zero point above 127); shift
    // the whole operand, zero point included, so that both stay in the same coordinates.
    let shift_a = azp > i8::MAX as i32 || a.iter().any(|&v| v > i8::MAX as i32);
    let shift_b = bzp.iter().chain(b).any(|&v| v > i8::MAX as i32);
    let to_i8 = |v: i32, shift: bool| if shift { (v - 128) as i8 } else { v as i8 };
    let ai: Vec<i8> = a.iter().map(|&v| to_i8(v, shift_a)).collect();
    let bi: Vec<i8> = b.iter().map(|&v| to_i8(v, shift_b)).collect();
    let bz: Vec<i8> = bzp.iter().map(|&v| to_i8(v, shift_b)).collect();
    let packed = kernels::int8::PackedI8::new(k, n, &bi, &bz)?;
    packed.gemm(m, &ai, to_i8(azp, shift_a), c)
}

/// DynamicQuantizeLinear as ONNX defines it (uint8, range widened to include 0).
fn dynamic_quantize(node: &Node, x: &Tensor) -> Result<Vec<Tensor>> {
    if let Some(v) = x.iter().find(|v| !v.is_finite()) {
        return Err(invalid(
            node,
            format!("the input holds {v}; its range cannot be quantized"),
        ));
    }
    let maxx = x.iter().copied().fold(0.0f32, f32::max);
    let minx = x.iter().copied().fold(0.0f32, f32::min);
    let scale = (if maxx == minx { 1.0 } else { maxx - minx }) / 255.0;
    let zp = (0.0 - minx / scale).clamp(0.0, 255.0).round_ties_even();
    let y = x.mapv(|v| ((v / scale).round_ties_even() + zp).clamp(0.0, 255.0));
    Ok(vec![
        y,
        tensor::from_vec(&[], vec![scale])?,
        tensor::from_vec(&[], vec![zp])?,
    ])
}

/// Cast between float, int8, uint8 and int32: to float is exact (already held as `f32`); float
/// to integer truncates toward zero and saturates (NaN gives 0); integer to a narrower integer
/// wraps (two's complement), as NumPy's `astype` does.
fn cast(node: &Node, x: &Tensor, from: DType, to: DType) -> Result<Vec<Tensor>> {
    if from == to || to == DType::F32 {
        if from.is_int() {
            ints(node, x, from, "input")?;
        }
        return Ok(vec![x.clone()]);
    }
    let y = if from == DType::F32 {
        x.mapv(|v| saturate(v.trunc() as i64, to) as f32)
    } else {
        let xi = ints(node, x, from, "input")?;
        let v: Vec<f32> = xi
            .into_iter()
            .map(|v| match to {
                DType::I8 => f32::from(v as i8),
                DType::U8 => f32::from(v as u8),
                _ => v as f32,
            })
            .collect();
        tensor::from_vec(x.shape(), v)?
    };
    Ok(vec![y])
}

/// Training does not go through quantization ops.
pub(super) fn backward(node: &Node) -> Error {
    Error::Invalid(format!(
        "node `{}` ({}): training through quantization and integer ops is not supported; \
         train the float model and quantize it afterwards",
        node.name,
        node.op.name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{AutoPad, ConvAttrs};
    use crate::rng::Rng;

    fn node(op: Op, inputs: usize) -> Node {
        Node {
            name: "n".into(),
            op,
            inputs: (0..inputs).map(|i| format!("i{i}")).collect(),
            outputs: vec!["y".into()],
        }
    }

    fn ints_tensor(rng: &mut Rng, shape: &[usize], lo: i64, hi: i64) -> Tensor {
        let n = shape.iter().product();
        let span = (hi - lo + 1) as usize;
        let v = (0..n)
            .map(|_| (lo + rng.below(span) as i64) as f32)
            .collect();
        tensor::from_vec(shape, v).unwrap()
    }

    /// ConvInteger equals the f32 reference convolution of the zero-point-shifted values
    /// (exact: small integers) across strides, padding, dilation, groups and auto_pad.
    #[test]
    fn conv_integer_matches_float_conv() {
        let mut rng = Rng::new(7);
        for (groups, strides, dil, pads, auto) in [
            (1, [1, 1], [1, 1], [0, 0, 0, 0], AutoPad::NotSet),
            (1, [2, 1], [1, 2], [1, 2, 0, 1], AutoPad::NotSet),
            (2, [1, 2], [1, 1], [1, 1, 1, 1], AutoPad::NotSet),
            (4, [2, 2], [1, 1], [0; 4], AutoPad::SameUpper),
            (1, [1, 1], [2, 2], [0; 4], AutoPad::SameLower),
        ] {
            let conv = ConvAttrs {
                kernel: [3, 2],
                strides,
                pads,
                dilations: dil,
                groups,
                auto_pad: auto,
            };
            let x = ints_tensor(&mut rng, &[2, 4, 7, 6], 0, 255);
            let w = ints_tensor(&mut rng, &[4, 4 / groups, 3, 2], -128, 127);
            let wzp = ints_tensor(&mut rng, &[4], -3, 3);
            let xzp = tensor::from_vec(&[], vec![17.0]).unwrap();
            let n = node(
                Op::ConvInteger {
                    conv: conv.clone(),
                    x: DType::U8,
                    w: DType::I8,
                },
                4,
            );
            let y = forward(&n, &[Some(&x), Some(&w), Some(&xzp), Some(&wzp)]).unwrap();
            let xs = x.mapv(|v| v - 17.0);
            let mut ws = w.clone();
            for (m, mut f) in ws.outer_iter_mut().enumerate() {
                f.mapv_inplace(|v| v - wzp[[m]]);
            }
            let fnode = node(Op::Conv(conv.clone()), 2);
            let want = super::conv::conv(&fnode, &conv, &xs, &ws, None).unwrap();
            assert_eq!(
                y[0], want,
                "groups {groups} strides {strides:?} pads {pads:?}"
            );
        }
    }

    /// MatMulInteger with batching and per-row/per-column zero points equals the f32 product.
    #[test]
    fn matmul_integer_matches_float_matmul() {
        let mut rng = Rng::new(9);
        let a = ints_tensor(&mut rng, &[2, 1, 3, 5], -128, 127);
        let b = ints_tensor(&mut rng, &[3, 5, 4], 0, 255);
        let azp = tensor::from_vec(&[], vec![-2.0]).unwrap();
        let bzp = ints_tensor(&mut rng, &[4], 0, 9);
        let n = node(
            Op::MatMulInteger {
                a: DType::I8,
                b: DType::U8,
            },
            4,
        );
        let y = forward(&n, &[Some(&a), Some(&b), Some(&azp), Some(&bzp)]).unwrap();
        let a2 = a.mapv(|v| v + 2.0);
        let mut b2 = b.clone();
        for mut row in b2.rows_mut() {
            for (j, v) in row.iter_mut().enumerate() {
                *v -= bzp[[j]];
            }
        }
        let want = super::linear::matmul(&node(Op::MatMul, 2), &a2, &b2).unwrap();
        assert_eq!(y[0], want);
        assert_eq!(y[0].shape(), &[2, 3, 3, 4]);
    }

    #[test]
    fn requantization_rounds_half_to_even_and_saturates() {
        assert_eq!(round_sat(2.5, DType::U8), 2.0);
        assert_eq!(round_sat(3.5, DType::U8), 4.0);
        assert_eq!(round_sat(-2.5, DType::I8), -2.0);
        assert_eq!(round_sat(300.0, DType::U8), 255.0);
        assert_eq!(round_sat(-300.0, DType::I8), -128.0);
        assert_eq!(round_sat(f64::NAN, DType::I8), 0.0);
    }

    #[test]
    fn dynamic_quantize_follows_onnx() {
        let n = node(Op::DynamicQuantizeLinear, 1);
        let x = tensor::from_vec(&[4], vec![0.0, 2.0, -3.0, 0.5]).unwrap();
        let y = forward(&n, &[Some(&x)]).unwrap();
        let scale = 5.0f32 / 255.0;
        assert_eq!(y[1][[]], scale);
        let zp = (3.0f32 / scale).round_ties_even();
        assert_eq!(y[2][[]], zp);
        assert_eq!(y[0][[2]], 0.0);
        assert_eq!(
            y[0][[1]],
            ((2.0f32 / scale).round_ties_even() + zp).min(255.0)
        );
        let inf = tensor::from_vec(&[1], vec![f32::INFINITY]).unwrap();
        assert!(forward(&n, &[Some(&inf)]).is_err());
    }

    #[test]
    fn backward_is_an_error() {
        let n = node(
            Op::DequantizeLinear {
                axis: 1,
                from: DType::I8,
            },
            2,
        );
        let x = tensor::from_vec(&[1], vec![1.0]).unwrap();
        let e = crate::ops::backward(&n, &[Some(&x), Some(&x)], &x, &Default::default(), &x)
            .unwrap_err();
        assert!(e.to_string().contains("not supported"), "{e}");
    }
}

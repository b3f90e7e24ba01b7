//! The integer ops with their constant weight packed once, for [`crate::plan`]: MatMulInteger,
//! QLinearMatMul, ConvInteger and QLinearConv on [`kernels::int8`] (convolutions through an
//! int8 im2col), giving bit-for-bit the reference's results ([`super::forward`]).
//!
//! uint8 operands are moved to int8 by subtracting 128 from the codes and from the zero point
//! together, which leaves every `code − zero point` unchanged. A convolution's padding is the
//! input's zero point, which contributes `0` to the sums, as in the reference. Requantization
//! uses the reference's arithmetic (the multiplier in `f32`, the product in `f64`, round half
//! to even), once per output after the integer sums.

use super::{conv, ints, invalid, round_sat, scalar_scale, scalar_zp, scales, vec_zp};
use crate::graph::{ConvAttrs, Node, Op};
use crate::kernels::int8::PackedI8;
use crate::ops::{get, linear, opt};
use crate::tensor::{self, DType, Tensor};
use crate::{Error, Result};

/// What the weight was packed for.
#[derive(Clone, Debug)]
enum Form {
    /// `A · B` with `B` (`k×n`) packed.
    MatMul { packed: PackedI8 },
    /// A convolution: one packed `(cg·kh·kw) × (m / groups)` matrix per group.
    Conv {
        attrs: ConvAttrs,
        w_shape: Vec<usize>,
        groups: Vec<PackedI8>,
    },
}

/// An integer op whose weight is packed for the int8 GEMM kernel.
#[derive(Clone, Debug)]
pub(crate) struct Prepared {
    form: Form,
}

/// The input slot of the weight and of its zero point, for the ops that have them.
pub(crate) fn weight_slots(op: &Op) -> Option<(usize, usize)> {
    match op {
        Op::MatMulInteger { .. } | Op::ConvInteger { .. } => Some((1, 3)),
        Op::QLinearMatMul { .. } | Op::QLinearConv { .. } => Some((3, 5)),
        _ => None,
    }
}

/// The codes of an int8/uint8 input moved to int8 coordinates in one pass, each checked to be
/// an integer of `dt` (the reference's check, without its `i32` copy).
fn codes_i8(node: &Node, t: &Tensor, dt: DType, what: &str) -> Result<Vec<i8>> {
    let (lo, shift) = match dt {
        DType::I8 => (-128.0f32, 0.0f32),
        DType::U8 => (0.0, 128.0),
        other => {
            // The int8 kernels take 8-bit operands only (the importer allows no other type
            // here); never narrow a wider value silently.
            return Err(invalid(
                node,
                format!("{what} has element type {other}; the int8 kernels take int8 or uint8"),
            ));
        }
    };
    let hi = lo + 255.0;
    let data = tensor::to_contiguous(t);
    let mut out = Vec::with_capacity(data.len());
    for &v in data.iter() {
        if !(v >= lo && v <= hi && v.fract() == 0.0) {
            return Err(invalid(
                node,
                format!("{what} must hold {dt} values, found {v}"),
            ));
        }
        out.push((v - shift) as i8);
    }
    Ok(out)
}

/// `v` moved to int8 coordinates (`− 128` for uint8), checked to fit.
fn to_i8(v: i32, shift: bool) -> i8 {
    let v = if shift { v - 128 } else { v };
    v.clamp(i8::MIN as i32, i8::MAX as i32) as i8
}

impl Prepared {
    /// Packs the weight of `node` (given as its constant `weight` and weight zero point).
    /// `None` when the op or the weight's form has no packed kernel (the reference runs it).
    pub(crate) fn new(node: &Node, weight: &Tensor, wzp: Option<&Tensor>) -> Result<Option<Self>> {
        let tw = match &node.op {
            Op::MatMulInteger { b, .. } | Op::QLinearMatMul { b, .. } => *b,
            Op::ConvInteger { w, .. } | Op::QLinearConv { w, .. } => *w,
            _ => return Ok(None),
        };
        let shift = tw == DType::U8;
        let w: Vec<i8> = ints(node, weight, tw, "the weight")?
            .into_iter()
            .map(|v| to_i8(v, shift))
            .collect();
        let form = match &node.op {
            Op::MatMulInteger { .. } | Op::QLinearMatMul { .. } => {
                if weight.ndim() != 2 {
                    return Ok(None);
                }
                let (k, n) = (weight.shape()[0], weight.shape()[1]);
                let zp: Vec<i8> = vec_zp(node, wzp, tw, "the weight's zero point", n)?
                    .into_iter()
                    .map(|v| to_i8(v, shift))
                    .collect();
                Form::MatMul {
                    packed: PackedI8::new(k, n, &w, &zp)?,
                }
            }
            Op::ConvInteger { conv: a, .. } | Op::QLinearConv { conv: a, .. } => {
                let s = weight.shape();
                if s.len() != 4 || a.groups == 0 || !s[0].is_multiple_of(a.groups) {
                    return Ok(None);
                }
                let (m, cg, kh, kw) = (s[0], s[1], s[2], s[3]);
                let zp: Vec<i8> = vec_zp(node, wzp, tw, "the weight's zero point", m)?
                    .into_iter()
                    .map(|v| to_i8(v, shift))
                    .collect();
                let mg = m / a.groups;
                let k = cg * kh * kw;
                let mut groups = Vec::with_capacity(a.groups);
                for g in 0..a.groups {
                    groups.push(PackedI8::from_rows(
                        mg,
                        k,
                        &w[g * mg * k..(g + 1) * mg * k],
                        &zp[g * mg..(g + 1) * mg],
                    )?);
                }
                Form::Conv {
                    attrs: a.clone(),
                    w_shape: s.to_vec(),
                    groups,
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(Prepared { form }))
    }

    /// Runs the op on `inputs` (the weight slot is ignored: the packed copy is used). Checks
    /// shapes and values like the reference.
    pub(crate) fn run(&self, node: &Node, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = get(node, inputs, 0)?;
        match (&self.form, &node.op) {
            (
                Form::MatMul { packed },
                Op::MatMulInteger { a: ta, .. } | Op::QLinearMatMul { a: ta, .. },
            ) => {
                let (shape, acc) = self.matmul(node, packed, x, *ta, opt(inputs, 2))?;
                Ok(vec![super::finish_matmul(
                    node,
                    inputs,
                    &shape,
                    packed.n(),
                    &acc,
                )?])
            }
            (
                Form::Conv {
                    attrs,
                    w_shape,
                    groups,
                },
                Op::ConvInteger { x: tx, .. },
            ) => {
                let (g, acc) = conv_packed(node, attrs, w_shape, groups, x, *tx, opt(inputs, 2))?;
                let y = acc.into_iter().map(|v| v as f32).collect();
                Ok(vec![tensor::from_vec(&[g.n, g.m, g.oh, g.ow], y)?])
            }
            (
                Form::Conv {
                    attrs,
                    w_shape,
                    groups,
                },
                Op::QLinearConv { x: tx, y: ty, .. },
            ) => {
                let (g, mut acc) =
                    conv_packed(node, attrs, w_shape, groups, x, *tx, opt(inputs, 2))?;
                let plane = g.oh * g.ow;
                if let Some(b) = opt(inputs, 8) {
                    let b = ints(node, b, DType::I32, "B")?;
                    if b.len() != g.m {
                        return Err(invalid(
                            node,
                            format!("B has {} values for {} output channels", b.len(), g.m),
                        ));
                    }
                    for (e, v) in acc.iter_mut().enumerate() {
                        *v = v.wrapping_add(b[(e / plane.max(1)) % g.m.max(1)]);
                    }
                }
                let xs = scalar_scale(node, get(node, inputs, 1)?, "x_scale")?;
                let ws = scales(node, get(node, inputs, 4)?, "w_scale")?;
                let ys = scalar_scale(node, get(node, inputs, 6)?, "y_scale")?;
                let yzp = scalar_zp(node, opt(inputs, 7), *ty, "y_zero_point")?;
                if ws.len() != 1 && ws.len() != g.m {
                    return Err(invalid(node, format!("w_scale has {} values", ws.len())));
                }
                // The reference's multiplier per channel (f32), applied in f64.
                let mults: Vec<f64> = (0..g.m)
                    .map(|m| f64::from(xs * ws[if ws.len() == 1 { 0 } else { m }] / ys))
                    .collect();
                let mut y = Vec::with_capacity(acc.len());
                for (ch, block) in acc.chunks(plane.max(1)).enumerate() {
                    let mult = mults[ch % g.m.max(1)];
                    y.extend(
                        block
                            .iter()
                            .map(|&v| round_sat(f64::from(v) * mult + f64::from(yzp), *ty)),
                    );
                }
                Ok(vec![tensor::from_vec(&[g.n, g.m, g.oh, g.ow], y)?])
            }
            _ => Err(Error::Invalid(format!(
                "node `{}` ({}): the packed weight does not fit this op",
                node.name,
                node.op.name()
            ))),
        }
    }

    /// `(A − a_zp) · (B − b_zp)` with `A`'s leading dimensions flattened into rows.
    fn matmul(
        &self,
        node: &Node,
        packed: &PackedI8,
        x: &Tensor,
        ta: DType,
        azp: Option<&Tensor>,
    ) -> Result<(Vec<usize>, Vec<i32>)> {
        let (k, n) = (packed.k(), packed.n());
        let out_shape = linear::matmul_shape(node, x.shape(), &[k, n])?;
        let rows = if x.ndim() >= 2 {
            x.shape()[x.ndim() - 2]
        } else {
            1
        };
        let azp = vec_zp(node, azp, ta, "a_zero_point", rows)?;
        if azp.iter().any(|&z| z != azp[0]) {
            return Err(invalid(
                node,
                "per-row zero points of A have no packed kernel",
            ));
        }
        let shift = ta == DType::U8;
        let a = codes_i8(node, x, ta, "A")?;
        // Rows of the product: every output dimension but the last (1 for a vector A).
        let m: usize = out_shape.iter().rev().skip(1).product();
        let mut c = vec![0i32; tensor::checked_numel(&[m, n])?];
        packed.gemm(
            m,
            &a,
            to_i8(azp.first().copied().unwrap_or(0), shift),
            &mut c,
        )?;
        Ok((out_shape, c))
    }
}

/// Whether a planned MatMulInteger can run packed with these runtime inputs (its A zero point
/// must be one value); the plan runs the reference otherwise.
pub(crate) fn packed_matmul_applies(node: &Node, inputs: &[Option<&Tensor>]) -> bool {
    match (&node.op, opt(inputs, 2)) {
        (Op::MatMulInteger { .. }, Some(z)) => {
            let first = z.iter().next().copied();
            z.iter().all(|v| Some(*v) == first)
        }
        _ => true,
    }
}

/// An integer convolution by int8 im2col and the packed GEMM: `Σ (x − x_zp)·(w − w_zp[m])`.
fn conv_packed(
    node: &Node,
    attrs: &ConvAttrs,
    w_shape: &[usize],
    groups: &[PackedI8],
    x: &Tensor,
    tx: DType,
    xzp: Option<&Tensor>,
) -> Result<(conv::Geometry, Vec<i32>)> {
    let g = conv::geometry(node, attrs, x.shape(), w_shape)?;
    if g.groups != groups.len() {
        return Err(invalid(node, "the packed weight has another group count"));
    }
    let shift = tx == DType::U8;
    let zp = to_i8(scalar_zp(node, xzp, tx, "x_zero_point")?, shift);
    let xi = codes_i8(node, x, tx, "x")?;
    let cg = g.c / g.groups.max(1);
    let mg = g.m / g.groups.max(1);
    let k = cg * g.kh * g.kw;
    let plane = g.oh * g.ow;
    let mut out = vec![0i32; tensor::checked_numel(&[g.n, g.m, g.oh, g.ow])?];
    let mut cols = vec![zp; tensor::checked_numel(&[plane, k])?];
    let mut c = vec![0i32; tensor::checked_numel(&[plane, mg])?];
    // Offset of each window element from the window's corner, in the group's input.
    let mut offsets = Vec::with_capacity(k);
    for ci in 0..cg {
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                offsets.push(ci * g.h * g.w + ky * g.dh * g.w + kx * g.dw);
            }
        }
    }
    for n in 0..g.n {
        for (grp, packed) in groups.iter().enumerate() {
            // im2col: row `p` (an output position) holds the window, the zero point outside.
            // A window inside the image is a gather at fixed offsets from its corner.
            let xg = &xi[(n * g.c + grp * cg) * g.h * g.w..(n * g.c + (grp + 1) * cg) * g.h * g.w];
            for oy in 0..g.oh {
                let y0 = (oy * g.sh) as isize - g.pt as isize;
                let rows_in = y0 >= 0 && y0 as usize + (g.kh - 1) * g.dh < g.h;
                for ox in 0..g.ow {
                    let x0 = (ox * g.sw) as isize - g.pl as isize;
                    let row = &mut cols[(oy * g.ow + ox) * k..(oy * g.ow + ox + 1) * k];
                    if rows_in && x0 >= 0 && x0 as usize + (g.kw - 1) * g.dw < g.w {
                        let base = y0 as usize * g.w + x0 as usize;
                        for (r, &o) in row.iter_mut().zip(&offsets) {
                            *r = xg[base + o];
                        }
                        continue;
                    }
                    for ci in 0..cg {
                        for ky in 0..g.kh {
                            let iy = y0 + (ky * g.dh) as isize;
                            for kx in 0..g.kw {
                                let ix = x0 + (kx * g.dw) as isize;
                                row[(ci * g.kh + ky) * g.kw + kx] =
                                    if iy < 0 || ix < 0 || iy as usize >= g.h || ix as usize >= g.w
                                    {
                                        zp
                                    } else {
                                        xg[ci * g.h * g.w + iy as usize * g.w + ix as usize]
                                    };
                            }
                        }
                    }
                }
            }
            packed.gemm(plane, &cols, zp, &mut c)?;
            for j in 0..mg {
                let dst = &mut out[(n * g.m + grp * mg + j) * plane..][..plane];
                for (p, d) in dst.iter_mut().enumerate() {
                    *d = c[p * mg + j];
                }
            }
        }
    }
    Ok((g, out))
}

//! Gemm and MatMul.

use super::elementwise::{broadcast_shape, reduce_to_shape};
use crate::graph::{GemmAttrs, Node};
use crate::tensor::Tensor;
use crate::{Error, Result};
use ndarray::{Array2, ArrayView2, Axis, Ix2, IxDyn, s};

fn as2<'a>(node: &Node, t: &'a Tensor, what: &str) -> Result<ArrayView2<'a, f32>> {
    t.view().into_dimensionality::<Ix2>().map_err(|_| {
        Error::shape(
            &node.name,
            "Gemm",
            format!("{what} must be 2-D"),
            &[t.shape()],
        )
    })
}

fn gemm_dims(
    node: &Node,
    a: &GemmAttrs,
    sa: &[usize],
    sb: &[usize],
) -> Result<(usize, usize, usize)> {
    if sa.len() != 2 || sb.len() != 2 {
        return Err(Error::shape(
            &node.name,
            "Gemm",
            "A and B must be 2-D",
            &[sa, sb],
        ));
    }
    let (m, k) = if a.trans_a {
        (sa[1], sa[0])
    } else {
        (sa[0], sa[1])
    };
    let (k2, n) = if a.trans_b {
        (sb[1], sb[0])
    } else {
        (sb[0], sb[1])
    };
    if k != k2 {
        return Err(Error::shape(
            &node.name,
            "Gemm",
            format!("inner dimensions differ ({k} vs {k2})"),
            &[sa, sb],
        ));
    }
    Ok((m, k, n))
}

pub(super) fn gemm_shape(
    node: &Node,
    a: &GemmAttrs,
    sa: &[usize],
    sb: &[usize],
    sc: Option<&[usize]>,
) -> Result<Vec<usize>> {
    let (m, _, n) = gemm_dims(node, a, sa, sb)?;
    if let Some(sc) = sc
        && broadcast_shape(sc, &[m, n]).as_deref() != Some(&[m, n][..])
    {
        return Err(Error::shape(
            &node.name,
            "Gemm",
            format!("C does not broadcast to [{m}, {n}]"),
            &[sa, sb, sc],
        ));
    }
    Ok(vec![m, n])
}

pub(super) fn gemm(
    node: &Node,
    at: &GemmAttrs,
    a: &Tensor,
    b: &Tensor,
    c: Option<&Tensor>,
) -> Result<Tensor> {
    let shape = gemm_shape(node, at, a.shape(), b.shape(), c.map(|c| c.shape()))?;
    let a2 = as2(node, a, "A")?;
    let b2 = as2(node, b, "B")?;
    let a2 = if at.trans_a { a2.t() } else { a2 };
    let b2 = if at.trans_b { b2.t() } else { b2 };
    let mut y = Array2::<f32>::zeros((shape[0], shape[1]));
    if let Some(c) = c {
        let cb = c.broadcast(IxDyn(&shape)).ok_or_else(|| {
            Error::shape(
                &node.name,
                "Gemm",
                "C does not broadcast",
                &[c.shape(), &shape],
            )
        })?;
        y.assign(
            &cb.into_dimensionality::<Ix2>()
                .map_err(|e| Error::Invalid(e.to_string()))?,
        );
        ndarray::linalg::general_mat_mul(at.alpha, &a2, &b2, at.beta, &mut y);
    } else {
        ndarray::linalg::general_mat_mul(at.alpha, &a2, &b2, 0.0, &mut y);
    }
    Ok(y.into_dyn())
}

pub(super) fn gemm_backward(
    at: &GemmAttrs,
    a: &Tensor,
    b: &Tensor,
    c: Option<&Tensor>,
    dy: &Tensor,
) -> Result<Vec<Option<Tensor>>> {
    fn dims(t: &Tensor) -> Result<ArrayView2<'_, f32>> {
        t.view()
            .into_dimensionality::<Ix2>()
            .map_err(|e| Error::Invalid(e.to_string()))
    }
    let (a2, b2, dy2) = (dims(a)?, dims(b)?, dims(dy)?);
    let ao = if at.trans_a { a2.t() } else { a2 };
    let bo = if at.trans_b { b2.t() } else { b2 };
    // d op(A) = alpha dY op(B)^T ; d op(B) = alpha op(A)^T dY
    let da_op = dy2.dot(&bo.t()) * at.alpha;
    let db_op = ao.t().dot(&dy2) * at.alpha;
    let da = if at.trans_a {
        da_op.reversed_axes()
    } else {
        da_op
    };
    let db = if at.trans_b {
        db_op.reversed_axes()
    } else {
        db_op
    };
    let dc = c.map(|c| reduce_to_shape(dy, c.shape()) * at.beta);
    Ok(vec![
        Some(da.as_standard_layout().into_owned().into_dyn()),
        Some(db.as_standard_layout().into_owned().into_dyn()),
        dc,
    ])
}

/// Dimensions of a numpy-style matmul after promoting 1-D operands.
struct MatmulPlan {
    /// Broadcast batch dims.
    batch: Vec<usize>,
    m: usize,
    k: usize,
    n: usize,
    /// Output shape (promoted dims removed again).
    out: Vec<usize>,
}

fn matmul_plan(node: &Node, sa: &[usize], sb: &[usize]) -> Result<MatmulPlan> {
    if sa.is_empty() || sb.is_empty() {
        return Err(Error::shape(
            &node.name,
            "MatMul",
            "operands must have rank ≥ 1",
            &[sa, sb],
        ));
    }
    let a: Vec<usize> = if sa.len() == 1 {
        vec![1, sa[0]]
    } else {
        sa.to_vec()
    };
    let b: Vec<usize> = if sb.len() == 1 {
        vec![sb[0], 1]
    } else {
        sb.to_vec()
    };
    let (m, k) = (a[a.len() - 2], a[a.len() - 1]);
    let (k2, n) = (b[b.len() - 2], b[b.len() - 1]);
    if k != k2 {
        return Err(Error::shape(
            &node.name,
            "MatMul",
            format!("inner dimensions differ ({k} vs {k2})"),
            &[sa, sb],
        ));
    }
    let batch = broadcast_shape(&a[..a.len() - 2], &b[..b.len() - 2]).ok_or_else(|| {
        Error::shape(
            &node.name,
            "MatMul",
            "batch dimensions do not broadcast",
            &[sa, sb],
        )
    })?;
    let mut out = batch.clone();
    if sa.len() > 1 {
        out.push(m);
    }
    if sb.len() > 1 {
        out.push(n);
    }
    Ok(MatmulPlan {
        batch,
        m,
        k,
        n,
        out,
    })
}

pub(super) fn matmul_shape(node: &Node, sa: &[usize], sb: &[usize]) -> Result<Vec<usize>> {
    Ok(matmul_plan(node, sa, sb)?.out)
}

fn promote(t: &Tensor, first: bool, batch: &[usize], rows: usize, cols: usize) -> Result<Tensor> {
    let base = if t.ndim() == 1 {
        if first {
            t.view().insert_axis(Axis(0))
        } else {
            t.view().insert_axis(Axis(1))
        }
    } else {
        t.view()
    };
    let mut full = batch.to_vec();
    full.extend([rows, cols]);
    base.broadcast(IxDyn(&full))
        .map(|v| v.to_owned())
        .ok_or_else(|| Error::Invalid("matmul broadcast failed".into()))
}

pub(super) fn matmul(node: &Node, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let MatmulPlan {
        batch,
        m,
        k,
        n,
        out,
    } = matmul_plan(node, a.shape(), b.shape())?;
    if a.ndim() == 2 && b.ndim() == 2 {
        return Ok(as2(node, a, "A")?.dot(&as2(node, b, "B")?).into_dyn());
    }
    // Common fast path: [.., M, K] x [K, N] folds the batch into rows.
    if b.ndim() == 2 && a.ndim() > 2 {
        let rows = a.len() / k.max(1);
        let a2 = crate::tensor::into_standard(a.clone())
            .into_shape_with_order((rows, k))
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let y = a2.dot(&as2(node, b, "B")?);
        return y
            .into_shape_with_order(IxDyn(&out))
            .map_err(|e| Error::Invalid(e.to_string()));
    }
    let pa = promote(a, true, &batch, m, k)?;
    let pb = promote(b, false, &batch, k, n)?;
    let nb: usize = batch.iter().product();
    let pa = pa
        .into_shape_with_order((nb, m, k))
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let pb = pb
        .into_shape_with_order((nb, k, n))
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let mut y = ndarray::Array3::<f32>::zeros((nb, m, n));
    for i in 0..nb {
        let r = pa.slice(s![i, .., ..]).dot(&pb.slice(s![i, .., ..]));
        y.slice_mut(s![i, .., ..]).assign(&r);
    }
    y.into_shape_with_order(IxDyn(&out))
        .map_err(|e| Error::Invalid(e.to_string()))
}

pub(super) fn matmul_backward(
    node: &Node,
    a: &Tensor,
    b: &Tensor,
    dy: &Tensor,
) -> Result<Vec<Option<Tensor>>> {
    let MatmulPlan { batch, m, k, n, .. } = matmul_plan(node, a.shape(), b.shape())?;
    let nb: usize = batch.iter().product();
    let pa = promote(a, true, &batch, m, k)?
        .into_shape_with_order((nb, m, k))
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let pb = promote(b, false, &batch, k, n)?
        .into_shape_with_order((nb, k, n))
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let dyp = crate::tensor::into_standard(dy.clone())
        .into_shape_with_order((nb, m, n))
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let mut da = ndarray::Array3::<f32>::zeros((nb, m, k));
    let mut db = ndarray::Array3::<f32>::zeros((nb, k, n));
    for i in 0..nb {
        let g = dyp.slice(s![i, .., ..]);
        da.slice_mut(s![i, .., ..])
            .assign(&g.dot(&pb.slice(s![i, .., ..]).t()));
        db.slice_mut(s![i, .., ..])
            .assign(&pa.slice(s![i, .., ..]).t().dot(&g));
    }
    let mut fa = batch.clone();
    fa.extend([m, k]);
    let mut fb = batch;
    fb.extend([k, n]);
    let da = da
        .into_shape_with_order(IxDyn(&fa))
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let db = db
        .into_shape_with_order(IxDyn(&fb))
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let fit = |g: Tensor, orig: &Tensor, first: bool| -> Result<Tensor> {
        if orig.ndim() == 1 {
            let axis = if first { g.ndim() - 2 } else { g.ndim() - 1 };
            let g = g.sum_axis(Axis(axis));
            Ok(reduce_to_shape(&g, orig.shape()))
        } else {
            Ok(reduce_to_shape(&g, orig.shape()))
        }
    };
    Ok(vec![Some(fit(da, a, true)?), Some(fit(db, b, false)?)])
}

//! int8 × int8 → i32 matrix product on the GPU (`int8_matmul.wgsl`), exact, with per-tensor
//! zero points (as ONNX `MatMulInteger`).

use super::context::{GpuContext, Kernel, u32_of};
use crate::{Error, Result};

pub(crate) const WGSL: &str = include_str!("int8_matmul.wgsl");

/// Packs `rows` rows of `k` bytes each (element `(r, i)` at `at(r, i)`) four to a u32, padding
/// every row to whole words with `pad`.
fn pack(rows: usize, k: usize, pad: i8, at: impl Fn(usize, usize) -> i8) -> Vec<u8> {
    let words = k.div_ceil(4);
    let mut out = Vec::with_capacity(rows * words * 4);
    for r in 0..rows {
        for i in 0..words * 4 {
            let v = if i < k { at(r, i) } else { pad };
            out.push(v as u8);
        }
    }
    out
}

/// A constant `B` (`[k, n]`) packed for [`PackedInt8B::matmul`]: uploaded once, column by
/// column, four signed bytes to a word, rows padded with the zero point.
#[derive(Debug)]
pub struct PackedInt8B {
    buf: wgpu::Buffer,
    k: usize,
    n: usize,
    zero: i8,
}

impl PackedInt8B {
    /// Packs and uploads `b` (row-major `[k, n]`) with its per-tensor zero point.
    pub fn new(ctx: &GpuContext, b: &[i8], zero: i8, k: usize, n: usize) -> Result<PackedInt8B> {
        check_len("B", k, n, b.len())?;
        if k > MAX_K {
            return Err(Error::Invalid(format!(
                "int8 matmul with K = {k} could overflow the i32 sums (at most {MAX_K})"
            )));
        }
        // An empty buffer cannot be bound: keep one padding word.
        let mut pb = pack(n, k, zero, |c, i| b[i * n + c]);
        if pb.is_empty() {
            pb = vec![0; 4];
        }
        Ok(PackedInt8B {
            buf: ctx.storage_init(&pb, "int8 B")?,
            k,
            n,
            zero,
        })
    }

    /// `K`.
    pub fn k(&self) -> usize {
        self.k
    }

    /// `N`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// `C = (A − a_zero) · (B − b_zero)` for row-major `A` (`[m, k]`): the `[m, n]` i32 sums.
    pub async fn matmul(
        &self,
        ctx: &GpuContext,
        a: &[i8],
        a_zero: i8,
        m: usize,
    ) -> Result<Vec<i32>> {
        let (k, n) = (self.k, self.n);
        check_len("A", m, k, a.len())?;
        let total = m
            .checked_mul(n)
            .ok_or_else(|| Error::Invalid("int8 matmul result too large".into()))?;
        if total == 0 {
            return Ok(Vec::new());
        }
        if k == 0 {
            return Ok(vec![0; total]);
        }
        let pa = pack(m, k, a_zero, |r, i| a[r * k + i]);
        let abuf = ctx.storage_init(&pa, "int8 A")?;
        let out = ctx.storage(total, "int8 product")?;
        let params = [
            u32_of(m, "M")?,
            u32_of(n, "N")?,
            u32_of(k.div_ceil(4), "K / 4")?,
            i32::from(a_zero) as u32,
            i32::from(self.zero) as u32,
        ];
        u32_of(total, "result size")?;
        ctx.dispatch(
            Kernel::Int8Matmul,
            &[&abuf, &self.buf, &out],
            &params,
            [
                u32_of(n.div_ceil(16), "column groups")?,
                u32_of(m.div_ceil(16), "row groups")?,
                1,
            ],
        )?;
        let bytes = ctx.read_bytes(&out, total as u64 * 4).await?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

/// An error unless an operand `what` of `rows × cols` has `len` values.
fn check_len(what: &str, rows: usize, cols: usize, len: usize) -> Result<()> {
    let want = rows.checked_mul(cols);
    if want == Some(len) {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "int8 matmul {what} of {rows}x{cols} needs {} values, got {len}",
        want.map_or("too many".to_string(), |v| v.to_string())
    )))
}

/// Largest `K` whose sums cannot overflow i32 (`K · 255² < 2³¹`).
pub const MAX_K: usize = 33_000;

/// `C = (A − a_zero) · (B − b_zero)` for row-major `A` (`[m, k]`) and `B` (`[k, n]`); returns
/// the `[m, n]` i32 sums, row-major. The sums are exact as long as they fit in i32
/// (`k · 255² < 2³¹`, i.e. any `k` up to [`MAX_K`]).
pub async fn matmul_int8(
    ctx: &GpuContext,
    a: &[i8],
    a_zero: i8,
    b: &[i8],
    b_zero: i8,
    (m, k, n): (usize, usize, usize),
) -> Result<Vec<i32>> {
    // A first: a wrong A is an error before B is uploaded.
    check_len("A", m, k, a.len())?;
    PackedInt8B::new(ctx, b, b_zero, k, n)?
        .matmul(ctx, a, a_zero, m)
        .await
}

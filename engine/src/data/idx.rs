//! The IDX format of the original MNIST files.

use crate::{Error, Result};

/// Parses an unsigned-byte IDX file: returns its dims and the data bytes.
pub fn parse_idx<'a>(b: &'a [u8], what: &'static str) -> Result<(Vec<usize>, &'a [u8])> {
    let err = |d: String| Error::Decode { what, detail: d };
    if b.len() < 4 || b[0] != 0 || b[1] != 0 {
        return Err(err("missing IDX magic".into()));
    }
    if b[2] != 0x08 {
        return Err(err(format!(
            "element type 0x{:02x} is not unsigned byte",
            b[2]
        )));
    }
    let nd = b[3] as usize;
    if nd == 0 || nd > 4 || b.len() < 4 + 4 * nd {
        return Err(err(format!("bad rank {nd}")));
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| {
            u32::from_be_bytes([b[4 + 4 * i], b[5 + 4 * i], b[6 + 4 * i], b[7 + 4 * i]]) as usize
        })
        .collect();
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| err("size overflow".into()))?;
    let data = &b[4 + 4 * nd..];
    if data.len() != n {
        return Err(err(format!(
            "dims {dims:?} need {n} bytes, file has {}",
            data.len()
        )));
    }
    Ok((dims, data))
}

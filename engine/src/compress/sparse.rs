//! Storage encodings of one weight tensor, encoded to real bytes and decoded back, so every byte
//! figure in a report is the length of an actual encoding.
//!
//! Layout (all integers little-endian), shared header: `kind: u8`, `rank: u8`, `dims: u32 × rank`.
//! - [`Encoding::Dense`]: then `f32 × n`.
//! - [`Encoding::Csr`]: the tensor is viewed as `[dims[0], n / dims[0]]` rows (a rank-0 or
//!   rank-1 tensor is one row); then `index_width: u8` (2 or 4), `nnz: u32`,
//!   `row_ptr: u32 × (rows + 1)`, `col: u16|u32 × nnz`, `values: f32 × nnz`. Column indices are
//!   `u16` when every column fits, `u32` otherwise.
//! - [`Encoding::Bitmask`]: then `nnz: u32`, `bits: ceil(n / 8)` bytes (bit `i % 8` of byte
//!   `i / 8` set = element `i` stored), `values: f32 × nnz`.
//!
//! Zero means `== 0.0`; a stored `-0.0` decodes as `+0.0`.

use crate::tensor::{Tensor, checked_numel, from_vec};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// How a tensor's values are laid out in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// Every element as f32.
    Dense,
    /// Compressed sparse rows: non-zero values, their column indices and row pointers.
    Csr,
    /// One presence bit per element plus the non-zero values.
    Bitmask,
}

impl Encoding {
    /// Every encoding, in the order [`encode_best`] tries them (ties keep the earlier one).
    pub const ALL: [Encoding; 3] = [Encoding::Dense, Encoding::Csr, Encoding::Bitmask];

    fn tag(self) -> u8 {
        match self {
            Encoding::Dense => 0,
            Encoding::Csr => 1,
            Encoding::Bitmask => 2,
        }
    }

    /// Short lowercase name (`dense`, `csr`, `bitmask`).
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Dense => "dense",
            Encoding::Csr => "csr",
            Encoding::Bitmask => "bitmask",
        }
    }
}

fn header(out: &mut Vec<u8>, tag: u8, shape: &[usize]) -> Result<()> {
    out.push(tag);
    out.push(u8::try_from(shape.len()).map_err(|_| Error::Invalid("rank above 255".into()))?);
    for &d in shape {
        out.extend_from_slice(&u32_of(d, "dimension")?.to_le_bytes());
    }
    Ok(())
}

fn u32_of(v: usize, what: &'static str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Limit {
        what,
        got: v as u64,
        limit: u32::MAX as u64,
    })
}

/// Encodes `t` with `enc`. Errors only when a size does not fit the format's `u32` fields.
pub fn encode(t: &Tensor, enc: Encoding) -> Result<Vec<u8>> {
    let shape = t.shape();
    let n = t.len();
    let mut out = Vec::new();
    header(&mut out, enc.tag(), shape)?;
    let values: Vec<f32> = t.iter().copied().collect();
    match enc {
        Encoding::Dense => {
            out.reserve(4 * n);
            values
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        }
        Encoding::Csr => {
            let rows = if shape.len() >= 2 { shape[0] } else { 1 };
            let cols = n.checked_div(rows).unwrap_or(0);
            let wide = cols > u16::MAX as usize + 1;
            out.push(if wide { 4 } else { 2 });
            let nnz = values.iter().filter(|v| **v != 0.0).count();
            out.extend_from_slice(&u32_of(nnz, "non-zero count")?.to_le_bytes());
            let mut ptr = 0u32;
            out.extend_from_slice(&ptr.to_le_bytes());
            for r in 0..rows {
                let row = &values[r * cols..(r + 1) * cols];
                ptr += row.iter().filter(|v| **v != 0.0).count() as u32;
                out.extend_from_slice(&ptr.to_le_bytes());
            }
            for r in 0..rows {
                for (c, v) in values[r * cols..(r + 1) * cols].iter().enumerate() {
                    if *v != 0.0 {
                        if wide {
                            out.extend_from_slice(&(c as u32).to_le_bytes());
                        } else {
                            out.extend_from_slice(&(c as u16).to_le_bytes());
                        }
                    }
                }
            }
            values
                .iter()
                .filter(|v| **v != 0.0)
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        }
        Encoding::Bitmask => {
            let nnz = values.iter().filter(|v| **v != 0.0).count();
            out.extend_from_slice(&u32_of(nnz, "non-zero count")?.to_le_bytes());
            let mut bits = vec![0u8; n.div_ceil(8)];
            for (i, v) in values.iter().enumerate() {
                if *v != 0.0 {
                    bits[i / 8] |= 1 << (i % 8);
                }
            }
            out.extend_from_slice(&bits);
            values
                .iter()
                .filter(|v| **v != 0.0)
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        }
    }
    Ok(out)
}

/// Encodes `t` in every [`Encoding`] and keeps the shortest.
pub fn encode_best(t: &Tensor) -> Result<(Encoding, Vec<u8>)> {
    let (enc, _) = best_len(t)?;
    Ok((enc, encode(t, enc)?))
}

/// The length of [`encode`]`(t, enc)` without building it: the same errors, one pass over the
/// values. Reports call it for every weight of every pass, where encoding each tensor three
/// times only to measure it was most of a recipe's time.
pub fn encoded_len(t: &Tensor, enc: Encoding) -> Result<usize> {
    Ok(lens(t)?[Encoding::ALL.iter().position(|e| *e == enc).unwrap_or(0)])
}

/// The shortest [`Encoding`] of `t` and its length: what [`encode_best`] picks (ties keep the
/// earlier one in [`Encoding::ALL`]), without encoding.
pub fn best_len(t: &Tensor) -> Result<(Encoding, usize)> {
    let lens = lens(t)?;
    let mut best = (Encoding::ALL[0], lens[0]);
    for (enc, len) in Encoding::ALL.into_iter().zip(lens).skip(1) {
        if len < best.1 {
            best = (enc, len);
        }
    }
    Ok(best)
}

/// [`encode`]'s length for each of [`Encoding::ALL`], in that order.
fn lens(t: &Tensor) -> Result<[usize; 3]> {
    let shape = t.shape();
    let n = t.len();
    let mut head = Vec::new();
    header(&mut head, 0, shape)?;
    let h = head.len();
    let nnz = t.iter().filter(|v| **v != 0.0).count();
    u32_of(nnz, "non-zero count")?;
    let rows = if shape.len() >= 2 { shape[0] } else { 1 };
    let cols = n.checked_div(rows).unwrap_or(0);
    let index = if cols > u16::MAX as usize + 1 { 4 } else { 2 };
    let dense = h + 4 * n;
    let csr = h + 1 + 4 + 4 * (rows + 1) + (index + 4) * nnz;
    let bitmask = h + 4 + n.div_ceil(8) + 4 * nnz;
    Ok([dense, csr, bitmask])
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or_else(|| truncated(self.at, n))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_bits(self.u32()?))
    }
}

fn truncated(at: usize, n: usize) -> Error {
    Error::Decode {
        what: "sparse tensor",
        detail: format!("truncated: {n} bytes wanted at offset {at}"),
    }
}

fn bad(detail: impl Into<String>) -> Error {
    Error::Decode {
        what: "sparse tensor",
        detail: detail.into(),
    }
}

/// Decodes bytes written by [`encode`], checking every size and index.
pub fn decode(bytes: &[u8]) -> Result<(Encoding, Tensor)> {
    let mut r = Reader { b: bytes, at: 0 };
    let tag = r.u8()?;
    let rank = r.u8()? as usize;
    if rank > crate::graph::limits::MAX_RANK {
        return Err(bad(format!("rank {rank} is above the limit")));
    }
    let shape: Vec<usize> = (0..rank)
        .map(|_| r.u32().map(|d| d as usize))
        .collect::<Result<_>>()?;
    let n = checked_numel(&shape)?;
    if n > crate::graph::limits::MAX_TENSOR_ELEMENTS {
        return Err(Error::Limit {
            what: "sparse tensor elements",
            got: n as u64,
            limit: crate::graph::limits::MAX_TENSOR_ELEMENTS as u64,
        });
    }
    // A dense record must hold its n values; check before allocating from the header.
    if tag == 0 && r.b.len() - r.at < n.saturating_mul(4) {
        return Err(truncated(r.at, n.saturating_mul(4)));
    }
    let mut values = vec![0.0f32; n];
    let enc = match tag {
        0 => {
            for v in values.iter_mut() {
                *v = r.f32()?;
            }
            Encoding::Dense
        }
        1 => {
            let rows = if shape.len() >= 2 { shape[0] } else { 1 };
            let cols = n.checked_div(rows).unwrap_or(0);
            let width = r.u8()?;
            let nnz = r.u32()? as usize;
            if nnz > n {
                return Err(bad(format!("{nnz} non-zeros in {n} elements")));
            }
            let ptr: Vec<usize> = (0..=rows)
                .map(|_| r.u32().map(|p| p as usize))
                .collect::<Result<_>>()?;
            if ptr[0] != 0 || ptr[rows] != nnz || ptr.windows(2).any(|w| w[0] > w[1]) {
                return Err(bad("row pointers are not monotone from 0 to nnz"));
            }
            let cols_idx: Vec<usize> = (0..nnz)
                .map(|_| match width {
                    2 => r.u16().map(|c| c as usize),
                    4 => r.u32().map(|c| c as usize),
                    w => Err(bad(format!("column index width {w}"))),
                })
                .collect::<Result<_>>()?;
            for row in 0..rows {
                for &c in &cols_idx[ptr[row]..ptr[row + 1]] {
                    if c >= cols {
                        return Err(bad(format!("column {c} out of {cols}")));
                    }
                    values[row * cols + c] = r.f32()?;
                }
            }
            Encoding::Csr
        }
        2 => {
            let nnz = r.u32()? as usize;
            let bits = r.take(n.div_ceil(8))?;
            let set = (0..n).filter(|&i| bits[i / 8] & (1 << (i % 8)) != 0);
            if set.clone().count() != nnz {
                return Err(bad("bit count differs from the non-zero count"));
            }
            for i in set {
                values[i] = r.f32()?;
            }
            Encoding::Bitmask
        }
        t => return Err(bad(format!("unknown encoding tag {t}"))),
    };
    if r.at != bytes.len() {
        return Err(bad(format!("{} trailing bytes", bytes.len() - r.at)));
    }
    Ok((enc, from_vec(&shape, values)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(shape: &[usize], every: usize) -> Tensor {
        let n: usize = shape.iter().product();
        let v = (0..n)
            .map(|i| {
                if i % every == 0 {
                    i as f32 * 0.25 - 3.0
                } else {
                    0.0
                }
            })
            .collect();
        from_vec(shape, v).unwrap()
    }

    #[test]
    fn lengths_without_encoding_equal_the_encodings() {
        let mut cases: Vec<Tensor> = [
            (vec![7usize, 13], 3usize),
            (vec![4, 3, 2, 5], 7),
            (vec![11], 2),
            (vec![3, 70_000], 1000),
            (vec![300, 100], 1),
            (vec![300, 100], 10),
            (vec![0, 5], 1),
            (vec![], 1),
        ]
        .into_iter()
        .map(|(shape, every)| sample(&shape, every))
        .collect();
        cases.push(from_vec(&[2, 3], vec![-0.0, 1.0, 0.0, 0.0, -2.0, 0.0]).unwrap());
        cases.push(from_vec(&[4], vec![0.0; 4]).unwrap());
        for t in &cases {
            for enc in Encoding::ALL {
                assert_eq!(
                    encoded_len(t, enc).unwrap(),
                    encode(t, enc).unwrap().len(),
                    "{enc:?} of {:?}",
                    t.shape()
                );
            }
            let (enc, bytes) = encode_best(t).unwrap();
            let shortest = Encoding::ALL
                .into_iter()
                .map(|e| (e, encode(t, e).unwrap()))
                .fold(None::<(Encoding, Vec<u8>)>, |best, (e, b)| match best {
                    Some(x) if x.1.len() <= b.len() => Some(x),
                    _ => Some((e, b)),
                })
                .unwrap();
            assert_eq!((enc, &bytes), (shortest.0, &shortest.1));
            assert_eq!(best_len(t).unwrap(), (enc, bytes.len()));
        }
    }

    #[test]
    fn every_encoding_round_trips_and_has_the_documented_length() {
        for (shape, every) in [
            (vec![7usize, 13], 3usize),
            (vec![4, 3, 2, 5], 7),
            (vec![11], 2),
            (vec![3, 70_000], 1000),
        ] {
            let t = sample(&shape, every);
            let n = t.len();
            let nnz = t.iter().filter(|v| **v != 0.0).count();
            let head = 2 + 4 * shape.len();
            let rows = if shape.len() >= 2 { shape[0] } else { 1 };
            let idx = if n / rows > 65_536 { 4 } else { 2 };
            for enc in Encoding::ALL {
                let b = encode(&t, enc).unwrap();
                let want = match enc {
                    Encoding::Dense => head + 4 * n,
                    Encoding::Csr => head + 1 + 4 + 4 * (rows + 1) + (idx + 4) * nnz,
                    Encoding::Bitmask => head + 4 + n.div_ceil(8) + 4 * nnz,
                };
                assert_eq!(b.len(), want, "{enc:?} {shape:?}");
                let (e, back) = decode(&b).unwrap();
                assert_eq!(e, enc);
                assert_eq!(back, t, "{enc:?} {shape:?}");
            }
        }
    }

    #[test]
    fn corrupt_bytes_are_errors_not_panics() {
        let t = sample(&[5, 9], 2);
        for enc in Encoding::ALL {
            let b = encode(&t, enc).unwrap();
            for cut in 0..b.len() {
                assert!(decode(&b[..cut]).is_err());
            }
        }
        let mut b = encode(&t, Encoding::Csr).unwrap();
        // Header 10 bytes, index width 1, nnz 4, row pointers 4 × 6: the first column index.
        b[39] = 200;
        assert!(decode(&b).is_err());
    }

    #[test]
    fn best_encoding_follows_density() {
        assert_eq!(
            encode_best(&sample(&[10, 10], 1)).unwrap().0,
            Encoding::Dense
        );
        assert_eq!(
            encode_best(&sample(&[100, 100], 50)).unwrap().0,
            Encoding::Csr
        );
        assert_eq!(
            encode_best(&sample(&[100, 100], 3)).unwrap().0,
            Encoding::Bitmask
        );
    }
}

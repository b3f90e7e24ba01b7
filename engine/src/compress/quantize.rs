//! Linear (uniform) quantization of weights to 1–8-bit integer codes.
//!
//! A value is `scale · (code − zero_point)`. Symmetric quantization fixes `zero_point = 2^(b−1)`
//! and uses codes `1 ..= 2^b − 1` (so `−max|w| ..= max|w|` with 0 exact; needs `b ≥ 2`);
//! asymmetric quantization maps `[min(w, 0), max(w, 0)]` onto `0 ..= 2^b − 1` with an integer
//! zero point, so 0 (a pruned weight) stays exactly 0. Per-channel quantization keeps one scale
//! (and zero point) per output channel.

use crate::tensor::{Tensor, checked_numel, from_vec};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Knobs of a linear quantizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantParams {
    /// Bits per code, 1–8 (symmetric needs at least 2).
    pub bits: u8,
    /// Symmetric (zero point fixed at the middle code) or asymmetric (zero point per scale).
    pub symmetric: bool,
    /// One scale per output channel instead of one per tensor.
    pub per_channel: bool,
}

impl QuantParams {
    /// Checks the knobs.
    pub fn check(&self) -> Result<()> {
        let lo = if self.symmetric { 2 } else { 1 };
        if self.bits < lo || self.bits > 8 {
            return Err(Error::Invalid(format!(
                "{} quantization supports {lo}–8 bits, got {}",
                if self.symmetric {
                    "symmetric"
                } else {
                    "asymmetric"
                },
                self.bits
            )));
        }
        Ok(())
    }
}

/// A tensor stored as integer codes plus their scales and zero points.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantizedTensor {
    /// Shape of the tensor.
    pub shape: Vec<usize>,
    /// Bits per code.
    pub bits: u8,
    /// Zero points are fixed at `2^(bits−1)` (not stored).
    pub symmetric: bool,
    /// Channel axis of the scales, `None` for one scale for the whole tensor.
    pub axis: Option<usize>,
    /// One scale per channel (or one).
    pub scales: Vec<f32>,
    /// The code that means 0.0, one per channel (or one).
    pub zero_points: Vec<u8>,
    /// One code per element in logical (row-major) order, each below `2^bits`.
    pub codes: Vec<u8>,
}

impl QuantizedTensor {
    /// Quantizes `t`; `axis` is the channel axis used when `p.per_channel`.
    pub fn quantize(t: &Tensor, p: QuantParams, axis: usize) -> Result<Self> {
        p.check()?;
        let shape = t.shape().to_vec();
        let axis = if p.per_channel {
            if axis >= shape.len() {
                return Err(Error::Invalid(format!(
                    "channel axis {axis} for a tensor of rank {}",
                    shape.len()
                )));
            }
            Some(axis)
        } else {
            None
        };
        let channels = axis.map_or(1, |a| shape[a]);
        let inner: usize = axis.map_or(1, |a| shape[a + 1..].iter().product());
        let chan = |i: usize| axis.map_or(0, |_| (i / inner.max(1)) % channels.max(1));
        let mut lo = vec![0.0f32; channels];
        let mut hi = vec![0.0f32; channels];
        for (i, &v) in t.iter().enumerate() {
            if !v.is_finite() {
                return Err(Error::Invalid(format!(
                    "cannot quantize a non-finite value ({v})"
                )));
            }
            let c = chan(i);
            lo[c] = lo[c].min(v);
            hi[c] = hi[c].max(v);
        }
        let levels = (1u32 << p.bits) - 1;
        let mut scales = Vec::with_capacity(channels);
        let mut zero_points = Vec::with_capacity(channels);
        for c in 0..channels {
            let (s, z) = if p.symmetric {
                let half = (1u32 << (p.bits - 1)) - 1;
                let m = lo[c].abs().max(hi[c].abs());
                (m / half as f32, 1u32 << (p.bits - 1))
            } else {
                let s = (hi[c] - lo[c]) / levels as f32;
                let z = if s > 0.0 {
                    (-lo[c] / s).round().clamp(0.0, levels as f32) as u32
                } else {
                    0
                };
                (s, z)
            };
            scales.push(if s > 0.0 { s } else { 1.0 });
            zero_points.push(z as u8);
        }
        let (cmin, cmax) = if p.symmetric {
            (1.0, levels as f32)
        } else {
            (0.0, levels as f32)
        };
        let codes = t
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let c = chan(i);
                ((v / scales[c]).round() + zero_points[c] as f32).clamp(cmin, cmax) as u8
            })
            .collect();
        Ok(QuantizedTensor {
            shape,
            bits: p.bits,
            symmetric: p.symmetric,
            axis,
            scales,
            zero_points,
            codes,
        })
    }

    /// Checks that the fields agree: element count, channel count, bit width and code range.
    pub fn check(&self) -> Result<()> {
        QuantParams {
            bits: self.bits,
            symmetric: self.symmetric,
            per_channel: self.axis.is_some(),
        }
        .check()?;
        let bad = |d: String| {
            Err(Error::Invalid(format!(
                "inconsistent quantized tensor: {d}"
            )))
        };
        if self.shape.len() > crate::graph::limits::MAX_RANK {
            return bad(format!("rank {}", self.shape.len()));
        }
        let n = checked_numel(&self.shape)?;
        let channels = match self.axis {
            Some(a) if a >= self.shape.len() => return bad(format!("axis {a}")),
            Some(a) => self.shape[a],
            None => 1,
        };
        if self.codes.len() != n
            || self.scales.len() != channels
            || self.zero_points.len() != channels
        {
            return bad(format!(
                "{} codes for {n} elements, {} scales and {} zero points for {channels} channels",
                self.codes.len(),
                self.scales.len(),
                self.zero_points.len()
            ));
        }
        let fits = |q: &u8| (*q as u32) >> self.bits == 0;
        if !self.codes.iter().all(fits) || !self.zero_points.iter().all(fits) {
            return bad(format!(
                "a code or zero point does not fit {} bits",
                self.bits
            ));
        }
        Ok(())
    }

    /// The f32 values the codes stand for (for evaluation with the reference ops).
    pub fn dequantize(&self) -> Result<Tensor> {
        self.check()?;
        let channels = self.axis.map_or(1, |a| self.shape[a]);
        let inner: usize = self
            .axis
            .map_or(1, |a| self.shape[a + 1..].iter().product());
        let v = self
            .codes
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                let c = self
                    .axis
                    .map_or(0, |_| (i / inner.max(1)) % channels.max(1));
                self.scales[c] * (q as f32 - self.zero_points[c] as f32)
            })
            .collect();
        from_vec(&self.shape, v)
    }

    /// Number of codes other than the zero point (weights that are not exactly zero).
    pub fn nonzero(&self) -> Result<usize> {
        self.check()?;
        let channels = self.axis.map_or(1, |a| self.shape[a]);
        let inner: usize = self
            .axis
            .map_or(1, |a| self.shape[a + 1..].iter().product());
        Ok(self
            .codes
            .iter()
            .enumerate()
            .filter(|&(i, &q)| {
                let c = self
                    .axis
                    .map_or(0, |_| (i / inner.max(1)) % channels.max(1));
                q != self.zero_points[c]
            })
            .count())
    }

    /// Encodes to bytes (little-endian): `bits: u8`, `flags: u8` (bit 0 symmetric, bit 1
    /// per-channel), `axis: u8`, `rank: u8`, `dims: u32 × rank`, `scales: f32 × channels`,
    /// `zero_points: u8 × channels` (asymmetric only), then the codes packed `bits` at a time,
    /// least significant bit first, `ceil(n·bits / 8)` bytes.
    pub fn encode(&self) -> Result<Vec<u8>> {
        self.check()?;
        let rank =
            u8::try_from(self.shape.len()).map_err(|_| Error::Invalid("rank above 255".into()))?;
        let mut out = vec![
            self.bits,
            u8::from(self.symmetric) | (u8::from(self.axis.is_some()) << 1),
            self.axis.unwrap_or(0) as u8,
            rank,
        ];
        for &d in &self.shape {
            let d = u32::try_from(d).map_err(|_| Error::Limit {
                what: "dimension",
                got: d as u64,
                limit: u32::MAX as u64,
            })?;
            out.extend_from_slice(&d.to_le_bytes());
        }
        self.scales
            .iter()
            .for_each(|s| out.extend_from_slice(&s.to_le_bytes()));
        if !self.symmetric {
            out.extend_from_slice(&self.zero_points);
        }
        out.extend_from_slice(&pack(&self.codes, self.bits));
        Ok(out)
    }

    /// Decodes bytes written by [`QuantizedTensor::encode`], checking every field.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = |d: String| Error::Decode {
            what: "quantized tensor",
            detail: d,
        };
        let need = |at: usize, n: usize| -> Result<()> {
            if at.checked_add(n).is_none_or(|e| e > bytes.len()) {
                Err(bad(format!("truncated: {n} bytes wanted at offset {at}")))
            } else {
                Ok(())
            }
        };
        need(0, 4)?;
        let (bits, flags, axis, rank) = (bytes[0], bytes[1], bytes[2] as usize, bytes[3] as usize);
        let symmetric = flags & 1 != 0;
        let per_channel = flags & 2 != 0;
        QuantParams {
            bits,
            symmetric,
            per_channel,
        }
        .check()
        .map_err(|e| bad(e.to_string()))?;
        if rank > crate::graph::limits::MAX_RANK || (per_channel && axis >= rank) {
            return Err(bad(format!("rank {rank}, axis {axis}")));
        }
        let mut at = 4;
        need(at, 4 * rank)?;
        let shape: Vec<usize> = (0..rank)
            .map(|k| {
                let s = &bytes[at + 4 * k..at + 4 * k + 4];
                u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize
            })
            .collect();
        at += 4 * rank;
        let n = checked_numel(&shape)?;
        let channels = if per_channel { shape[axis] } else { 1 };
        need(at, 4 * channels)?;
        let scales: Vec<f32> = bytes[at..at + 4 * channels]
            .chunks_exact(4)
            .map(|s| f32::from_le_bytes([s[0], s[1], s[2], s[3]]))
            .collect();
        at += 4 * channels;
        let zero_points = if symmetric {
            vec![1u8 << (bits - 1); channels]
        } else {
            need(at, channels)?;
            at += channels;
            bytes[at - channels..at].to_vec()
        };
        let b = bits as usize;
        let len = (n * b).div_ceil(8);
        need(at, len)?;
        if at + len != bytes.len() {
            return Err(bad(format!("{} trailing bytes", bytes.len() - at - len)));
        }
        let codes = unpack(&bytes[at..], n, bits);
        let q = QuantizedTensor {
            shape,
            bits,
            symmetric,
            axis: per_channel.then_some(axis),
            scales,
            zero_points,
            codes,
        };
        q.check().map_err(|e| bad(e.to_string()))?;
        Ok(q)
    }
}

/// Packs `bits`-bit codes least significant bit first into `ceil(n·bits / 8)` bytes (the code
/// layout of [`QuantizedTensor::encode`] and of the low-bit encodings).
pub(crate) fn pack(codes: &[u8], bits: u8) -> Vec<u8> {
    let b = bits as usize;
    let mut out = vec![0u8; (codes.len() * b).div_ceil(8)];
    for (i, &q) in codes.iter().enumerate() {
        for k in 0..b {
            if q & (1 << k) != 0 {
                let at = i * b + k;
                out[at / 8] |= 1 << (at % 8);
            }
        }
    }
    out
}

/// The `n` codes of [`pack`]; `packed` must hold at least `ceil(n·bits / 8)` bytes.
pub(crate) fn unpack(packed: &[u8], n: usize, bits: u8) -> Vec<u8> {
    let b = bits as usize;
    (0..n)
        .map(|i| {
            (0..b).fold(0u8, |q, k| {
                let p = i * b + k;
                q | (((packed[p / 8] >> (p % 8)) & 1) << k)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        from_vec(
            shape,
            (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 40.0) * 0.013 * (1 + i % 3) as f32)
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn every_bit_width_round_trips_through_bytes_within_half_a_step() {
        let t = ramp(&[6, 5, 3]);
        for bits in 1..=8u8 {
            for symmetric in [false, true] {
                for per_channel in [false, true] {
                    let p = QuantParams {
                        bits,
                        symmetric,
                        per_channel,
                    };
                    if symmetric && bits == 1 {
                        assert!(QuantizedTensor::quantize(&t, p, 0).is_err());
                        continue;
                    }
                    let q = QuantizedTensor::quantize(&t, p, 0).unwrap();
                    assert!(q.codes.iter().all(|&c| (c as u32) < (1 << bits)));
                    let bytes = q.encode().unwrap();
                    let channels = if per_channel { 6 } else { 1 };
                    let want = 4
                        + 12
                        + 4 * channels
                        + if symmetric { 0 } else { channels }
                        + (90 * bits as usize).div_ceil(8);
                    assert_eq!(bytes.len(), want);
                    let back = QuantizedTensor::decode(&bytes).unwrap();
                    assert_eq!(back, q);
                    let d = q.dequantize().unwrap();
                    for (i, (a, b)) in t.iter().zip(d.iter()).enumerate() {
                        let c = if per_channel { i / 15 } else { 0 };
                        assert!(
                            (a - b).abs() <= q.scales[c] * 0.5 + 1e-6,
                            "{p:?} {i}: {a} vs {b}"
                        );
                    }
                    for cut in 0..bytes.len() {
                        assert!(QuantizedTensor::decode(&bytes[..cut]).is_err());
                    }
                }
            }
        }
    }

    #[test]
    fn inconsistent_fields_are_errors() {
        let p = QuantParams {
            bits: 3,
            symmetric: false,
            per_channel: true,
        };
        let q = QuantizedTensor::quantize(&ramp(&[4, 5]), p, 0).unwrap();
        assert_eq!(
            q.nonzero().unwrap(),
            q.dequantize()
                .unwrap()
                .iter()
                .filter(|v| **v != 0.0)
                .count()
        );
        let mut a = q.clone();
        a.scales.pop();
        assert!(a.dequantize().is_err() && a.encode().is_err());
        let mut b = q.clone();
        b.codes[0] = 8;
        assert!(b.dequantize().is_err());
        let mut c = q;
        c.axis = Some(2);
        assert!(c.nonzero().is_err());
    }

    #[test]
    fn zero_stays_exactly_zero() {
        let mut t = ramp(&[4, 8]);
        t.iter_mut().step_by(3).for_each(|v| *v = 0.0);
        for (bits, symmetric) in [(2, true), (4, false), (8, true), (1, false)] {
            let p = QuantParams {
                bits,
                symmetric,
                per_channel: true,
            };
            let d = QuantizedTensor::quantize(&t, p, 0)
                .unwrap()
                .dequantize()
                .unwrap();
            for (a, b) in t.iter().zip(d.iter()) {
                if *a == 0.0 {
                    assert_eq!(*b, 0.0);
                }
            }
        }
    }
}

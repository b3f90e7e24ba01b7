//! Low-bit weight quantization: logarithmic (power-of-two), binary (XNOR-Net scaling,
//! deterministic or stochastic), ternary (TWN) and DoReFa k-bit weights, each with an exact byte
//! encoding and a decoder; quantization-aware training (QAT) with the straight-through
//! estimator for these schemes and for linear quantization; and activation-range calibration.
//!
//! - `log2`: values `0` and `±2^(e_max − j)`, `j = 0 ..= 2^(b−1) − 2`; `b` bits per code (a
//!   sign bit and `b − 1` exponent bits, magnitude code 0 = zero); one `e_max: i8` per channel.
//!   Zero is exact.
//! - `binary`: `±α` with `α = mean(abs(w))` of the channel; 1 bit; no zero (0 becomes `+α`).
//! - `ternary`: `0, ±α` with threshold `Δ = 0.7 · mean(abs(w))` and `α` the mean magnitude above
//!   it; 2 bits. Zero is exact.
//! - `dorefa`: `s · (2q/(2^k − 1) − 1)`, `q = 0 ..= 2^k − 1`; `k` bits; a least-squares scale
//!   `s` per channel. No zero.
//!
//! The straight-through estimator: during the `qat` pass the forward pass sees the quantized
//! weights and the gradient with respect to them is applied unchanged to the float ("shadow")
//! weights (see [`crate::train::Hooks::forward_weights`]).

use super::quantize::{QuantParams, QuantizedTensor, pack, unpack};
use super::{PassCtx, Target};
use crate::data::{Dataset, Preprocess};
use crate::graph::{Graph, Op};
use crate::rng::Rng;
use crate::tensor::{Tensor, checked_numel, from_vec};
use crate::train::{Hooks, TrainConfig};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::collections::BTreeMap;

/// A low-bit weight quantizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    /// Power-of-two magnitudes `±2^e` and an explicit zero (Miyashita et al., 2016).
    Log2,
    /// `±α` per channel with `α = mean|w|` (XNOR-Net, Rastegari et al., 2016); sign or
    /// stochastic (BinaryConnect, Courbariaux et al., 2015).
    Binary,
    /// `{−α, 0, +α}` with threshold `0.7 · mean|w|` (TWN, Li et al., 2016).
    Ternary,
    /// DoReFa-Net k-bit weights (Zhou et al., 2016): a uniform grid over `tanh`-normalised
    /// weights, times a least-squares scale per channel.
    Dorefa,
}

impl Scheme {
    fn code(self) -> u8 {
        match self {
            Scheme::Log2 => 0,
            Scheme::Binary => 1,
            Scheme::Ternary => 2,
            Scheme::Dorefa => 3,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => Scheme::Log2,
            1 => Scheme::Binary,
            2 => Scheme::Ternary,
            3 => Scheme::Dorefa,
            _ => return None,
        })
    }

    /// The scheme's name in recipes (`log2`, `binary`, `ternary`, `dorefa`).
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Log2 => "log2",
            Scheme::Binary => "binary",
            Scheme::Ternary => "ternary",
            Scheme::Dorefa => "dorefa",
        }
    }

    /// Bits per code when a recipe does not say: binary 1, ternary 2, log2 and DoReFa 4.
    pub fn default_bits(self) -> u8 {
        match self {
            Scheme::Binary => 1,
            Scheme::Ternary => 2,
            Scheme::Log2 | Scheme::Dorefa => 4,
        }
    }

    /// Checks a bit width: binary takes 1, ternary 2, log2 2–8 (a sign bit and at least one
    /// exponent bit), DoReFa 1–8.
    pub fn check_bits(self, bits: u8) -> Result<()> {
        let (lo, hi) = match self {
            Scheme::Binary => (1, 1),
            Scheme::Ternary => (2, 2),
            Scheme::Log2 => (2, 8),
            Scheme::Dorefa => (1, 8),
        };
        if bits < lo || bits > hi {
            return Err(Error::Invalid(format!(
                "{} quantization takes {} bits, got {bits}",
                self.name(),
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}–{hi}")
                }
            )));
        }
        Ok(())
    }
}

fn yes() -> bool {
    true
}

fn one() -> u64 {
    1
}

/// Knobs of the `lowbit` pass: `{"pass": "lowbit", "scheme": "log2", "bits": 4,
/// "per_channel": true, "stochastic": false, "seed": 1}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LowBitParams {
    /// The quantizer.
    pub scheme: Scheme,
    /// Bits per code; `None` = [`Scheme::default_bits`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits: Option<u8>,
    /// One parameter (exponent, `α` or scale) per output channel instead of one per tensor.
    #[serde(default = "yes")]
    pub per_channel: bool,
    /// Stochastic binarization (binary only): `+α` with probability
    /// `clip((w/α + 1) / 2, 0, 1)`, the hard sigmoid.
    #[serde(default)]
    pub stochastic: bool,
    /// Seed of the stochastic draws.
    #[serde(default = "one")]
    pub seed: u64,
}

impl LowBitParams {
    /// Deterministic, per-channel, default bits.
    pub fn new(scheme: Scheme) -> Self {
        LowBitParams {
            scheme,
            bits: None,
            per_channel: true,
            stochastic: false,
            seed: 1,
        }
    }

    /// The bit width in use.
    pub fn bits(&self) -> u8 {
        self.bits.unwrap_or(self.scheme.default_bits())
    }

    /// Checks the knobs.
    pub fn check(&self) -> Result<()> {
        self.scheme.check_bits(self.bits())?;
        if self.stochastic && self.scheme != Scheme::Binary {
            return Err(Error::Invalid(format!(
                "stochastic rounding is only for binary weights, not {}",
                self.scheme.name()
            )));
        }
        Ok(())
    }
}

/// A tensor stored as low-bit codes plus one parameter per channel (or one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LowBitTensor {
    /// The quantizer.
    pub scheme: Scheme,
    /// Bits per code.
    pub bits: u8,
    /// Shape of the tensor.
    pub shape: Vec<usize>,
    /// Channel axis of the parameters, `None` for one for the whole tensor.
    pub axis: Option<usize>,
    /// Log2: the largest exponent `e_max` of each channel.
    pub exponents: Vec<i8>,
    /// Binary and ternary: `α` of each channel; DoReFa: the scale `s`.
    pub scales: Vec<f32>,
    /// One code per element in logical (row-major) order, each below `2^bits`.
    pub codes: Vec<u8>,
}

/// `(channels, inner)`: element `i` belongs to channel `(i / inner) % channels`.
fn layout(shape: &[usize], axis: Option<usize>) -> (usize, usize) {
    match axis {
        Some(a) => (shape[a], shape[a + 1..].iter().product()),
        None => (1, 1),
    }
}

fn chan(i: usize, axis: Option<usize>, channels: usize, inner: usize) -> usize {
    axis.map_or(0, |_| (i / inner.max(1)) % channels.max(1))
}

/// `round(log2 x)` for finite `x > 0`, rounding in the log domain (`x ≥ √2 · 2^⌊log2 x⌋`
/// rounds up); exact, from the bits of `x`.
fn log2_round(x: f32) -> i32 {
    let x = x as f64;
    let e = ((x.to_bits() >> 52) & 0x7ff) as i32 - 1023;
    let m = x / pow2(e);
    e + i32::from(m >= std::f64::consts::SQRT_2)
}

fn pow2(e: i32) -> f64 {
    2f64.powi(e)
}

impl LowBitTensor {
    /// Quantizes `t` with `p`; `axis` is the channel axis used when `p.per_channel`. `stream`
    /// labels the random draws of stochastic binarization (with `p.seed`).
    pub fn quantize(t: &Tensor, p: &LowBitParams, axis: usize, stream: u64) -> Result<Self> {
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
        let (channels, inner) = layout(&shape, axis);
        if let Some(v) = t.iter().find(|v| !v.is_finite()) {
            return Err(Error::Invalid(format!(
                "cannot quantize a non-finite value ({v})"
            )));
        }
        let bits = p.bits();
        let ch = |i: usize| chan(i, axis, channels, inner);
        // Per-channel sums of |w|, counts, nonzero counts and maxima.
        let mut sum = vec![0f64; channels];
        let mut cnt = vec![0usize; channels];
        let mut nz = vec![0usize; channels];
        let mut max = vec![0f32; channels];
        for (i, &v) in t.iter().enumerate() {
            let c = ch(i);
            sum[c] += v.abs() as f64;
            cnt[c] += 1;
            nz[c] += usize::from(v != 0.0);
            max[c] = max[c].max(v.abs());
        }
        let mut exponents = Vec::new();
        let mut scales = Vec::new();
        let codes: Vec<u8> = match p.scheme {
            Scheme::Log2 => {
                exponents = max
                    .iter()
                    .map(|&m| {
                        if m > 0.0 {
                            log2_round(m).clamp(-128, 127) as i8
                        } else {
                            0
                        }
                    })
                    .collect();
                let levels = (1i32 << (bits - 1)) - 1;
                t.iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        let e_max = exponents[ch(i)] as i32;
                        let e_min = e_max - (levels - 1);
                        if v == 0.0 || (v.abs() as f64) < pow2(e_min - 1) {
                            return 0;
                        }
                        let e = log2_round(v.abs()).clamp(e_min, e_max);
                        let m = (e_max - e + 1) as u8;
                        m | (u8::from(v < 0.0) << (bits - 1))
                    })
                    .collect()
            }
            Scheme::Binary => {
                scales = sum
                    .iter()
                    .zip(&cnt)
                    .map(|(&s, &n)| (s / n.max(1) as f64) as f32)
                    .collect();
                let mut rng = Rng::new(p.seed).fork(stream);
                t.iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        if p.stochastic {
                            let a = scales[ch(i)];
                            let prob = if a > 0.0 {
                                ((v / a + 1.0) / 2.0).clamp(0.0, 1.0)
                            } else {
                                0.5
                            };
                            u8::from(rng.uniform() < prob)
                        } else {
                            u8::from(v >= 0.0)
                        }
                    })
                    .collect()
            }
            Scheme::Ternary => {
                let delta: Vec<f32> = sum
                    .iter()
                    .zip(&nz)
                    .map(|(&s, &n)| (0.7 * s / n.max(1) as f64) as f32)
                    .collect();
                let mut big = vec![0f64; channels];
                let mut nbig = vec![0usize; channels];
                let codes = t
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        let c = ch(i);
                        if v.abs() > delta[c] {
                            big[c] += v.abs() as f64;
                            nbig[c] += 1;
                            if v > 0.0 { 1 } else { 2 }
                        } else {
                            0
                        }
                    })
                    .collect();
                scales = big
                    .iter()
                    .zip(&nbig)
                    .map(|(&s, &n)| (s / n.max(1) as f64) as f32)
                    .collect();
                codes
            }
            Scheme::Dorefa => {
                let mut tmax = vec![0f32; channels];
                for (i, &v) in t.iter().enumerate() {
                    let c = ch(i);
                    tmax[c] = tmax[c].max(v.tanh().abs());
                }
                let top = ((1u32 << bits) - 1) as f32;
                let codes: Vec<u8> = t
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        let m = tmax[ch(i)];
                        let n = if m > 0.0 {
                            v.tanh() / (2.0 * m) + 0.5
                        } else {
                            0.5
                        };
                        (n * top).round().clamp(0.0, top) as u8
                    })
                    .collect();
                // Least-squares scale: s = Σ w·v / Σ v² over the grid values v.
                let mut wv = vec![0f64; channels];
                let mut vv = vec![0f64; channels];
                for (i, (&w, &q)) in t.iter().zip(&codes).enumerate() {
                    let c = ch(i);
                    let g = dorefa_level(q, bits) as f64;
                    wv[c] += w as f64 * g;
                    vv[c] += g * g;
                }
                scales = wv
                    .iter()
                    .zip(&vv)
                    .map(|(&a, &b)| if b > 0.0 { (a / b) as f32 } else { 0.0 })
                    .collect();
                codes
            }
        };
        Ok(LowBitTensor {
            scheme: p.scheme,
            bits,
            shape,
            axis,
            exponents,
            scales,
            codes,
        })
    }

    /// Checks that the fields agree: bit width, element and channel counts, code ranges and
    /// finite parameters.
    pub fn check(&self) -> Result<()> {
        self.scheme.check_bits(self.bits)?;
        let bad = |d: String| Err(Error::Invalid(format!("inconsistent low-bit tensor: {d}")));
        if self.shape.len() > crate::graph::limits::MAX_RANK {
            return bad(format!("rank {}", self.shape.len()));
        }
        let n = checked_numel(&self.shape)?;
        if let Some(a) = self.axis.filter(|&a| a >= self.shape.len()) {
            return bad(format!("axis {a}"));
        }
        let (channels, _) = layout(&self.shape, self.axis);
        let (ne, ns) = if self.scheme == Scheme::Log2 {
            (channels, 0)
        } else {
            (0, channels)
        };
        if self.codes.len() != n || self.exponents.len() != ne || self.scales.len() != ns {
            return bad(format!(
                "{} codes for {n} elements, {} exponents and {} scales for {channels} channels",
                self.codes.len(),
                self.exponents.len(),
                self.scales.len()
            ));
        }
        if let Some(s) = self.scales.iter().find(|s| !s.is_finite()) {
            return bad(format!("scale {s}"));
        }
        if matches!(self.scheme, Scheme::Binary | Scheme::Ternary)
            && self.scales.iter().any(|&s| s < 0.0)
        {
            return bad("negative α".into());
        }
        let ok = |&q: &u8| -> bool {
            (q as u32) >> self.bits == 0
                && match self.scheme {
                    Scheme::Ternary => q != 3,
                    // Zero has one code: magnitude 0 with the sign bit clear.
                    Scheme::Log2 => q != 1 << (self.bits - 1),
                    Scheme::Binary | Scheme::Dorefa => true,
                }
        };
        if let Some(q) = self.codes.iter().find(|q| !ok(q)) {
            return bad(format!(
                "code {q} is not a {}-bit {} code",
                self.bits,
                self.scheme.name()
            ));
        }
        Ok(())
    }

    /// The value of code `q` in channel `c` (fields already checked).
    fn value(&self, q: u8, c: usize) -> f32 {
        match self.scheme {
            Scheme::Log2 => {
                let sign_bit = 1u8 << (self.bits - 1);
                let m = (q & (sign_bit - 1)) as i32;
                if m == 0 {
                    return 0.0;
                }
                let v = pow2(self.exponents[c] as i32 - (m - 1)) as f32;
                if q & sign_bit != 0 { -v } else { v }
            }
            Scheme::Binary => {
                if q == 1 {
                    self.scales[c]
                } else {
                    -self.scales[c]
                }
            }
            Scheme::Ternary => match q {
                1 => self.scales[c],
                2 => -self.scales[c],
                _ => 0.0,
            },
            Scheme::Dorefa => self.scales[c] * dorefa_level(q, self.bits),
        }
    }

    /// The f32 values the codes stand for.
    pub fn decode(&self) -> Result<Tensor> {
        self.check()?;
        let (channels, inner) = layout(&self.shape, self.axis);
        let v = self
            .codes
            .iter()
            .enumerate()
            .map(|(i, &q)| self.value(q, chan(i, self.axis, channels, inner)))
            .collect();
        from_vec(&self.shape, v)
    }

    /// A short description for reports (`log2 4-bit per-channel`).
    pub fn describe(&self) -> String {
        format!(
            "{} {}-bit {}",
            self.scheme.name(),
            self.bits,
            if self.axis.is_some() {
                "per-channel"
            } else {
                "per-tensor"
            }
        )
    }

    /// Encodes to bytes (little-endian): `scheme: u8` (0 log2, 1 binary, 2 ternary, 3 DoReFa),
    /// `bits: u8`, `flags: u8` (bit 0 per-channel), `axis: u8`, `rank: u8`, `dims: u32 × rank`,
    /// then per channel (or once) `e_max: i8` (log2) or `f32` (`α` or scale), then the codes
    /// packed `bits` at a time, least significant bit first: `ceil(n · bits / 8)` bytes.
    pub fn encode(&self) -> Result<Vec<u8>> {
        self.check()?;
        let rank =
            u8::try_from(self.shape.len()).map_err(|_| Error::Invalid("rank above 255".into()))?;
        let mut out = vec![
            self.scheme.code(),
            self.bits,
            u8::from(self.axis.is_some()),
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
        out.extend(self.exponents.iter().map(|&e| e as u8));
        self.scales
            .iter()
            .for_each(|s| out.extend_from_slice(&s.to_le_bytes()));
        out.extend_from_slice(&pack(&self.codes, self.bits));
        Ok(out)
    }

    /// Decodes bytes written by [`LowBitTensor::encode`], checking every field; anything
    /// malformed is [`Error::Decode`].
    pub fn decode_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |d: String| Error::Decode {
            what: "low-bit tensor",
            detail: d,
        };
        let need = |at: usize, n: usize| -> Result<()> {
            if at.checked_add(n).is_none_or(|e| e > bytes.len()) {
                Err(bad(format!("truncated: {n} bytes wanted at offset {at}")))
            } else {
                Ok(())
            }
        };
        need(0, 5)?;
        let scheme =
            Scheme::from_code(bytes[0]).ok_or_else(|| bad(format!("scheme {}", bytes[0])))?;
        let (bits, flags, axis, rank) = (bytes[1], bytes[2], bytes[3] as usize, bytes[4] as usize);
        scheme.check_bits(bits).map_err(|e| bad(e.to_string()))?;
        if flags > 1 {
            return Err(bad(format!("flags {flags}")));
        }
        let per_channel = flags == 1;
        if rank > crate::graph::limits::MAX_RANK || (per_channel && axis >= rank) {
            return Err(bad(format!("rank {rank}, axis {axis}")));
        }
        if !per_channel && axis != 0 {
            return Err(bad(format!("axis {axis} without per-channel")));
        }
        let mut at = 5;
        need(at, 4 * rank)?;
        let shape: Vec<usize> = bytes[at..at + 4 * rank]
            .chunks_exact(4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
            .collect();
        at += 4 * rank;
        let n = checked_numel(&shape).map_err(|e| bad(e.to_string()))?;
        let axis = per_channel.then_some(axis);
        let (channels, _) = layout(&shape, axis);
        let (mut exponents, mut scales) = (Vec::new(), Vec::new());
        if scheme == Scheme::Log2 {
            need(at, channels)?;
            exponents = bytes[at..at + channels].iter().map(|&b| b as i8).collect();
            at += channels;
        } else {
            need(at, channels.saturating_mul(4))?;
            scales = bytes[at..at + 4 * channels]
                .chunks_exact(4)
                .map(|s| f32::from_le_bytes([s[0], s[1], s[2], s[3]]))
                .collect();
            at += 4 * channels;
        }
        let len = n
            .checked_mul(bits as usize)
            .ok_or_else(|| bad("size overflow".into()))?
            .div_ceil(8);
        need(at, len)?;
        if at + len != bytes.len() {
            return Err(bad(format!("{} trailing bytes", bytes.len() - at - len)));
        }
        let packed = &bytes[at..];
        // Padding bits of the last byte must be zero (one encoding per tensor).
        let used = n * bits as usize;
        if !used.is_multiple_of(8) && packed.last().is_some_and(|b| b >> (used % 8) != 0) {
            return Err(bad("nonzero padding bits".into()));
        }
        let t = LowBitTensor {
            scheme,
            bits,
            shape,
            axis,
            exponents,
            scales,
            codes: unpack(packed, n, bits),
        };
        t.check().map_err(|e| bad(e.to_string()))?;
        Ok(t)
    }

    /// Elements whose code decodes to a value other than zero.
    pub fn nonzero(&self) -> Result<usize> {
        Ok(self.decode()?.iter().filter(|v| **v != 0.0).count())
    }
}

/// DoReFa grid level of code `q`: `2q / (2^k − 1) − 1`, never zero.
fn dorefa_level(q: u8, bits: u8) -> f32 {
    2.0 * q as f32 / ((1u32 << bits) - 1) as f32 - 1.0
}

/// Stream label of target `i` for stochastic draws.
fn stream(i: usize) -> u64 {
    0x10b1_7000 + i as u64
}

/// The `lowbit` pass: quantizes every target weight of `g` with `p`, stores the codes in
/// `ctx.lowbit` and puts the decoded values into the graph.
pub(super) fn pass(
    g: &mut Graph,
    ctx: &mut PassCtx,
    tg: &[Target],
    p: &LowBitParams,
) -> Result<()> {
    p.check()?;
    if !ctx.quantized.is_empty() || !ctx.shared.is_empty() || !ctx.lowbit.is_empty() {
        return Err(Error::Invalid(
            "lowbit runs once, on float weights (not after quantize, share or lowbit)".into(),
        ));
    }
    for (i, t) in tg.iter().enumerate() {
        let q = LowBitTensor::quantize(&g.weights[&t.weight], p, t.axis, stream(i))?;
        g.weights.insert(t.weight.clone(), q.decode()?);
        ctx.lowbit.insert(t.weight.clone(), q);
    }
    Ok(())
}

/// The quantizer trained against by the `qat` pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QatScheme {
    /// Linear quantization ([`QuantizedTensor`], the `quantize` pass).
    Linear,
    /// See [`Scheme::Log2`].
    Log2,
    /// See [`Scheme::Binary`].
    Binary,
    /// See [`Scheme::Ternary`].
    Ternary,
    /// See [`Scheme::Dorefa`].
    Dorefa,
}

/// Knobs of the `qat` pass: the quantizer, then every [`TrainConfig`] field (`epochs`, `lr`,
/// `seed`...). `{"pass": "qat", "scheme": "binary", "epochs": 1, "lr": 0.0005}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QatSpec {
    /// The quantizer.
    pub scheme: QatScheme,
    /// Bits per code; `None` = linear 8, else [`Scheme::default_bits`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits: Option<u8>,
    /// One scale (exponent, `α`) per output channel.
    #[serde(default = "yes")]
    pub per_channel: bool,
    /// Linear only: symmetric (else asymmetric).
    #[serde(default = "yes")]
    pub symmetric: bool,
    /// Binary only: stochastic binarization in the training forward passes (drawn from
    /// `seed`); the final codes use the deterministic sign, BinaryConnect's test-time rule.
    #[serde(default)]
    pub stochastic: bool,
    /// Also quantize the activations that feed hidden Gemm/Conv layers (BNN sign or DoReFa
    /// k-bit; see [`super::actquant`]); written into the graph before training, so the model
    /// trains and runs with them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activations: Option<super::actquant::ActQuant>,
    /// The fine-tuning run.
    #[serde(flatten)]
    pub train: TrainConfig,
}

/// A weight quantizer for QAT: linear or low-bit.
enum Quantizer {
    Linear(QuantParams),
    Low(LowBitParams),
}

impl QatSpec {
    fn quantizer(&self, stochastic: bool) -> Result<Quantizer> {
        let scheme = match self.scheme {
            QatScheme::Linear => {
                if self.stochastic {
                    return Err(Error::Invalid(
                        "stochastic rounding is only for binary weights, not linear".into(),
                    ));
                }
                let p = QuantParams {
                    bits: self.bits.unwrap_or(8),
                    symmetric: self.symmetric,
                    per_channel: self.per_channel,
                };
                p.check()?;
                return Ok(Quantizer::Linear(p));
            }
            QatScheme::Log2 => Scheme::Log2,
            QatScheme::Binary => Scheme::Binary,
            QatScheme::Ternary => Scheme::Ternary,
            QatScheme::Dorefa => Scheme::Dorefa,
        };
        if !self.symmetric {
            return Err(Error::Invalid(format!(
                "`symmetric: false` is a linear knob, not a {} one",
                scheme.name()
            )));
        }
        let mut p = LowBitParams {
            scheme,
            bits: self.bits,
            per_channel: self.per_channel,
            stochastic: self.stochastic,
            seed: self.train.seed,
        };
        p.check()?;
        p.stochastic = stochastic;
        Ok(Quantizer::Low(p))
    }

    /// Checks the knobs.
    pub fn check(&self) -> Result<()> {
        if let Some(a) = &self.activations {
            a.check()?;
        }
        self.quantizer(self.stochastic).map(|_| ())
    }
}

/// Images used to calibrate DoReFa activation ranges in the `qat` pass.
pub const ACT_CALIBRATION_IMAGES: usize = 1000;

/// The `qat` pass: fine-tunes `g` on `ctx.data` with the target weights fake-quantized in every
/// forward pass (straight-through estimator; pruning masks kept), then quantizes them for real
/// into `ctx.quantized` (linear) or `ctx.lowbit`.
pub(super) fn qat(g: &mut Graph, ctx: &mut PassCtx, tg: &[Target], spec: &QatSpec) -> Result<()> {
    spec.check()?;
    if !ctx.quantized.is_empty() || !ctx.shared.is_empty() || !ctx.lowbit.is_empty() {
        return Err(Error::Invalid(
            "qat trains float weights: run it before (instead of) quantize, share or lowbit".into(),
        ));
    }
    let data = ctx
        .data
        .ok_or_else(|| Error::Invalid("the qat pass needs training data".into()))?;
    let train_q = spec.quantizer(spec.stochastic)?;
    if let Some(act) = &spec.activations {
        let ranges = match act {
            super::actquant::ActQuant::Dorefa { range: None, .. } => {
                calibrate(g, data, ACT_CALIBRATION_IMAGES)?
            }
            _ => BTreeMap::new(),
        };
        super::actquant::apply(g, act, &ranges)?;
    }
    let index: BTreeMap<&str, (usize, usize)> = tg
        .iter()
        .enumerate()
        .map(|(i, t)| (t.weight.as_str(), (i, t.axis)))
        .collect();
    // Each forward pass views every target once; the counter makes stochastic draws differ
    // from step to step (and stay reproducible).
    let calls = Cell::new(0u64);
    let fake = |name: &str, w: &Tensor| -> Result<Option<Tensor>> {
        let Some(&(i, axis)) = index.get(name) else {
            return Ok(None);
        };
        let k = calls.get();
        calls.set(k + 1);
        Ok(Some(match &train_q {
            Quantizer::Linear(p) => QuantizedTensor::quantize(w, *p, axis)?.dequantize()?,
            Quantizer::Low(p) => {
                LowBitTensor::quantize(w, p, axis, stream(i) ^ (k << 20))?.decode()?
            }
        }))
    };
    let s = crate::train::train_with(
        g,
        data,
        None,
        &spec.train,
        Hooks {
            masks: Some(&ctx.masks),
            objective: None,
            forward_weights: Some(&fake),
        },
        ctx.on_progress,
    )?;
    if s.cancelled {
        return Err(Error::Cancelled);
    }
    ctx.finetune.push(s);
    match spec.quantizer(false)? {
        Quantizer::Linear(p) => {
            for t in tg {
                let q = QuantizedTensor::quantize(&g.weights[&t.weight], p, t.axis)?;
                g.weights.insert(t.weight.clone(), q.dequantize()?);
                ctx.quantized.insert(t.weight.clone(), q);
            }
        }
        Quantizer::Low(p) => {
            for (i, t) in tg.iter().enumerate() {
                let q = LowBitTensor::quantize(&g.weights[&t.weight], &p, t.axis, stream(i))?;
                g.weights.insert(t.weight.clone(), q.decode()?);
                ctx.lowbit.insert(t.weight.clone(), q);
            }
        }
    }
    Ok(())
}

/// Activation ranges for static int8 quantization: the `(min, max)` of the data input of every
/// Gemm and Conv node (by node name) over the first `n` images of `data` (all when `n` is
/// larger), evaluated in inference mode with the graph's preprocessing. `n = 0` is an error.
pub fn calibrate(g: &Graph, data: &Dataset, n: usize) -> Result<BTreeMap<String, (f32, f32)>> {
    let n = n.min(data.len());
    if n == 0 {
        return Err(Error::Invalid(
            "calibration needs at least one image".into(),
        ));
    }
    let input = g
        .inputs
        .first()
        .map(|v| v.name.clone())
        .ok_or_else(|| Error::Graph("the graph has no input".into()))?;
    let nodes: Vec<(String, String)> = g
        .nodes
        .iter()
        .filter(|nd| matches!(nd.op, Op::Gemm(_) | Op::Conv(_)))
        .filter_map(|nd| nd.inputs.first().map(|x| (nd.name.clone(), x.clone())))
        .collect();
    let mut probe = g.clone();
    probe.validate()?;
    probe.outputs = nodes.iter().map(|(_, x)| x.clone()).collect();
    let pre = Preprocess::from_metadata(&g.metadata).unwrap_or_default();
    let mut ranges: Vec<(f32, f32)> = vec![(f32::INFINITY, f32::NEG_INFINITY); nodes.len()];
    let idx: Vec<usize> = (0..n).collect();
    for chunk in idx.chunks(256) {
        let (x, _) = data.batch(chunk, &pre);
        let outs = crate::exec::run(&probe, &[(input.as_str(), &x)])?;
        for (r, o) in ranges.iter_mut().zip(&outs) {
            for &v in o.iter() {
                r.0 = r.0.min(v);
                r.1 = r.1.max(v);
            }
        }
    }
    Ok(nodes
        .into_iter()
        .map(|(name, _)| name)
        .zip(ranges)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_round_is_nearest_in_the_log_domain() {
        assert_eq!(log2_round(1.0), 0);
        assert_eq!(log2_round(1.41), 0);
        assert_eq!(log2_round(1.42), 1);
        assert_eq!(log2_round(0.25), -2);
        assert_eq!(log2_round(0.3), -2);
        assert_eq!(log2_round(3.0), 2);
        assert_eq!(log2_round(f32::MAX), 128);
        assert_eq!(log2_round(f32::from_bits(1)), -149);
    }

    #[test]
    fn pack_round_trips() {
        for bits in 1..=8u8 {
            let codes: Vec<u8> = (0..37u32)
                .map(|i| ((i * 29 + 3) % (1 << bits)) as u8)
                .collect();
            let p = pack(&codes, bits);
            assert_eq!(p.len(), (37 * bits as usize).div_ceil(8));
            assert_eq!(unpack(&p, 37, bits), codes);
        }
    }
}

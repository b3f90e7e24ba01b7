//! Weight sharing by k-means (Han et al., 2016, "Deep Compression", stage 2).
//!
//! Each target weight gets its own codebook of `2^bits` f32 centroids. Only the kept weights are
//! clustered: an element is kept when its pruning mask says so (all elements when the weight has
//! no mask) and it is not exactly zero. Centroids start evenly spaced over `[min, max]` of the
//! kept weights (linear initialisation, the paper's best), then Lloyd iterations assign each
//! weight to its nearest centroid (ties to the lower index) and move each centroid to the mean of
//! its members, until no assignment changes or `iterations` is reached. A cluster that loses all
//! its members keeps its centroid. There is no randomness, so the result is deterministic.
//!
//! The stored form is a [`SharedTensor`]; [`SharedTensor::encode`] writes the layer record of the
//! `.lithe` container (see [`crate::format::lithe`]).

use super::huffman::{self, Reader, StreamBytes};
use crate::tensor::{Tensor, checked_numel, from_vec};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Knobs of the `share` pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareParams {
    /// Index width: `2^bits` clusters per layer, 1..=8.
    pub bits: u8,
    /// Maximum Lloyd iterations.
    #[serde(default = "default_iterations")]
    pub iterations: usize,
    /// Index width for Conv weights when it should differ from `bits` (Deep Compression uses 8
    /// bits for conv layers and 5 for fc layers of LeNet-5); `None` = `bits` everywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv_bits: Option<u8>,
}

fn default_iterations() -> usize {
    50
}

impl ShareParams {
    /// Checks the knobs.
    pub fn check(&self) -> Result<()> {
        for b in std::iter::once(self.bits).chain(self.conv_bits) {
            if !(1..=8).contains(&b) {
                return Err(Error::Invalid(format!("share: {b} bits, expected 1..=8")));
            }
        }
        Ok(())
    }
}

/// A weight stored as a codebook and one index per element.
#[derive(Clone, Debug, PartialEq)]
pub struct SharedTensor {
    /// `2^bits` centroids.
    pub codebook: Vec<f32>,
    /// One codebook index per element (0 where the element is not kept).
    pub indices: Vec<u8>,
    /// Shape of the weight.
    pub shape: Vec<usize>,
    /// `true` where the element is kept; other elements decode to `0.0`.
    pub mask: Vec<bool>,
}

fn nearest(codebook: &[f32], v: f32) -> u8 {
    let mut best = (0usize, f32::INFINITY);
    for (k, &c) in codebook.iter().enumerate() {
        let d = (v - c).abs();
        if d < best.1 {
            best = (k, d);
        }
    }
    best.0 as u8
}

/// Byte counts of one encoded layer record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerBytes {
    /// Shape, widths, coding flag.
    pub header: usize,
    /// The f32 centroids.
    pub codebook: usize,
    /// Huffman code-length tables and stream headers (counts, lengths) of both streams.
    pub tables: usize,
    /// Coded index stream.
    pub indices: usize,
    /// Coded gap stream.
    pub gaps: usize,
}

impl LayerBytes {
    /// Sum of every section.
    pub fn total(&self) -> usize {
        self.header + self.codebook + self.tables + self.indices + self.gaps
    }
}

/// How the index and gap streams of a layer record are coded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Coding {
    /// Fixed width: `bits` per index, `gap_bits` per gap (Deep Compression stage 2).
    Fixed,
    /// Canonical Huffman (stage 3).
    Huffman,
}

/// The relative-position (gap) symbols of the kept elements of a mask of length `n`, with
/// `gap_bits`-wide symbols. Symbol `g < M = 2^gap_bits − 1` means "skip `g` positions, then one
/// kept element"; the filler symbol `M` means "skip `M` positions" and carries no element.
/// Fillers are also emitted after the last element while at least `M` positions remain, so the
/// decoder can bound the tensor size by the number of symbols.
pub fn gaps(mask: &[bool], gap_bits: u8) -> Vec<u8> {
    let m = (1usize << gap_bits) - 1;
    let mut out = Vec::new();
    let mut run = 0usize;
    for &k in mask {
        if k {
            while run >= m {
                out.push(m as u8);
                run -= m;
            }
            out.push(run as u8);
            run = 0;
        } else {
            run += 1;
        }
    }
    while run >= m {
        out.push(m as u8);
        run -= m;
    }
    out
}

impl SharedTensor {
    /// Clusters the kept elements of `w` (see the module docs). `mask`, when given, must have one
    /// flag per element.
    pub fn share(w: &Tensor, mask: Option<&[bool]>, p: ShareParams) -> Result<Self> {
        p.check()?;
        let vals: Vec<f32> = w.iter().copied().collect();
        if let Some(m) = mask
            && m.len() != vals.len()
        {
            return Err(Error::Invalid(format!(
                "share: mask has {} flags, the weight has {} elements",
                m.len(),
                vals.len()
            )));
        }
        let keep: Vec<bool> = vals
            .iter()
            .enumerate()
            .map(|(i, v)| *v != 0.0 && mask.is_none_or(|m| m[i]))
            .collect();
        if vals.iter().zip(&keep).any(|(v, k)| *k && !v.is_finite()) {
            return Err(Error::Invalid("share: non-finite weight".into()));
        }
        let kept: Vec<usize> = (0..vals.len()).filter(|&i| keep[i]).collect();
        let k = 1usize << p.bits;
        let (lo, hi) = kept
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |a, &i| {
                (a.0.min(vals[i]), a.1.max(vals[i]))
            });
        let mut codebook: Vec<f32> = if kept.is_empty() {
            vec![0.0; k]
        } else {
            (0..k)
                .map(|j| {
                    if k == 1 {
                        (lo + hi) / 2.0
                    } else {
                        (f64::from(lo)
                            + (f64::from(hi) - f64::from(lo)) * j as f64 / (k - 1) as f64)
                            as f32
                    }
                })
                .collect()
        };
        let mut indices = vec![0u8; vals.len()];
        let mut first = true;
        for _ in 0..p.iterations.max(1) {
            let mut changed = false;
            for &i in &kept {
                let a = nearest(&codebook, vals[i]);
                if a != indices[i] || first {
                    changed |= a != indices[i];
                    indices[i] = a;
                }
            }
            first = false;
            let mut sum = vec![0f64; k];
            let mut cnt = vec![0usize; k];
            for &i in &kept {
                sum[indices[i] as usize] += f64::from(vals[i]);
                cnt[indices[i] as usize] += 1;
            }
            let mut moved = false;
            for j in 0..k {
                if cnt[j] > 0 {
                    let c = (sum[j] / cnt[j] as f64) as f32;
                    moved |= c != codebook[j];
                    codebook[j] = c;
                }
            }
            if !changed && !moved {
                break;
            }
        }
        Ok(SharedTensor {
            codebook,
            indices,
            shape: w.shape().to_vec(),
            mask: keep,
        })
    }

    /// Index width in bits (`log2` of the codebook length).
    pub fn bits(&self) -> u8 {
        self.codebook.len().trailing_zeros() as u8
    }

    /// Checks that the fields agree with each other.
    pub fn check(&self) -> Result<()> {
        let n = checked_numel(&self.shape)?;
        let k = self.codebook.len();
        if !k.is_power_of_two() || !(2..=256).contains(&k) {
            return Err(Error::Invalid(format!(
                "shared tensor: codebook of {k} entries (2..=256, a power of two)"
            )));
        }
        if self.indices.len() != n || self.mask.len() != n {
            return Err(Error::Invalid(format!(
                "shared tensor: {} indices and {} mask flags for {n} elements",
                self.indices.len(),
                self.mask.len()
            )));
        }
        if self.indices.iter().any(|&i| i as usize >= k) {
            return Err(Error::Invalid(
                "shared tensor: index outside the codebook".into(),
            ));
        }
        Ok(())
    }

    /// The float weight: `codebook[index]` where kept, `0.0` elsewhere.
    pub fn decode(&self) -> Result<Tensor> {
        self.check()?;
        let v = self
            .indices
            .iter()
            .zip(&self.mask)
            .map(|(&i, &m)| if m { self.codebook[i as usize] } else { 0.0 })
            .collect();
        from_vec(&self.shape, v)
    }

    /// Number of kept elements.
    pub fn kept(&self) -> usize {
        self.mask.iter().filter(|m| **m).count()
    }

    /// Centroid fine-tuning (Han et al., 2016, §3.1): the gradient of each shared weight is the
    /// sum of the gradients of the elements in its cluster, and each centroid takes one step
    /// `c_k ← c_k − lr · Σ_{i ∈ k} ∂L/∂w_i`. Pruned elements do not contribute. `grad` is the
    /// dense gradient of the weight.
    pub fn finetune_codebook(&mut self, grad: &Tensor, lr: f32) -> Result<()> {
        self.check()?;
        if grad.shape() != self.shape.as_slice() {
            return Err(Error::Invalid(format!(
                "share fine-tune: gradient shape {:?}, weight shape {:?}",
                grad.shape(),
                self.shape
            )));
        }
        let mut sum = vec![0f64; self.codebook.len()];
        for ((g, &i), &m) in grad.iter().zip(&self.indices).zip(&self.mask) {
            if m {
                sum[i as usize] += f64::from(*g);
            }
        }
        for (c, s) in self.codebook.iter_mut().zip(sum) {
            *c = (f64::from(*c) - f64::from(lr) * s) as f32;
        }
        Ok(())
    }

    fn symbols(&self) -> Vec<u8> {
        self.indices
            .iter()
            .zip(&self.mask)
            .filter(|(_, m)| **m)
            .map(|(i, _)| *i)
            .collect()
    }

    /// Encodes the layer record with the gap width (1..=8 bits) that gives the fewest bytes.
    ///
    /// Layout: `rank: u8`, `dims: u32 × rank`, `bits: u8`, `gap_bits: u8`, `coding: u8`
    /// (0 fixed, 1 Huffman) — the header; `codebook: f32 × 2^bits`; the index stream (one symbol
    /// per kept element, in element order); the gap stream (see [`gaps`]). Streams are
    /// [`huffman::encode_into`] streams, or for fixed coding [`huffman::pack_into`] streams.
    pub fn encode(&self, coding: Coding) -> Result<(Vec<u8>, LayerBytes)> {
        let mut best: Option<(Vec<u8>, LayerBytes)> = None;
        for gb in 1..=8 {
            let r = self.encode_with(coding, gb)?;
            if best.as_ref().is_none_or(|b| r.0.len() < b.0.len()) {
                best = Some(r);
            }
        }
        best.ok_or_else(|| Error::Invalid("no gap width".into()))
    }

    /// Encodes the layer record with a given gap width.
    pub fn encode_with(&self, coding: Coding, gap_bits: u8) -> Result<(Vec<u8>, LayerBytes)> {
        self.check()?;
        if !(1..=8).contains(&gap_bits) {
            return Err(Error::Invalid(format!("gap width {gap_bits} (1..=8)")));
        }
        let mut out = Vec::new();
        out.push(
            u8::try_from(self.shape.len()).map_err(|_| Error::Invalid("rank above 255".into()))?,
        );
        for &d in &self.shape {
            let d = u32::try_from(d).map_err(|_| Error::Limit {
                what: "dimension",
                got: d as u64,
                limit: u32::MAX as u64,
            })?;
            out.extend_from_slice(&d.to_le_bytes());
        }
        let bits = self.bits();
        out.extend_from_slice(&[bits, gap_bits, u8::from(coding == Coding::Huffman)]);
        let header = out.len();
        self.codebook
            .iter()
            .for_each(|c| out.extend_from_slice(&c.to_le_bytes()));
        let codebook = out.len() - header;
        let syms = self.symbols();
        let gs = gaps(&self.mask, gap_bits);
        let (a, b): (StreamBytes, StreamBytes) = match coding {
            Coding::Fixed => (
                huffman::pack_into(&mut out, &syms, bits)?,
                huffman::pack_into(&mut out, &gs, gap_bits)?,
            ),
            Coding::Huffman => (
                huffman::encode_into(&mut out, &syms, 1 << bits)?,
                huffman::encode_into(&mut out, &gs, 1 << gap_bits)?,
            ),
        };
        let sizes = LayerBytes {
            header,
            codebook,
            tables: a.table + b.table,
            indices: a.data,
            gaps: b.data,
        };
        Ok((out, sizes))
    }

    /// Decodes one layer record at the reader's position. Limits: rank ≤
    /// [`crate::graph::limits::MAX_RANK`], elements ≤
    /// [`crate::graph::limits::MAX_TENSOR_ELEMENTS`], and the gap stream must cover exactly the
    /// declared element count — which bounds it by the stream's own length before anything of
    /// that size is allocated.
    pub(crate) fn decode_from(r: &mut Reader) -> Result<Self> {
        let bad = |d: String| Error::Decode {
            what: "shared layer",
            detail: d,
        };
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
                what: "shared layer elements",
                got: n as u64,
                limit: crate::graph::limits::MAX_TENSOR_ELEMENTS as u64,
            });
        }
        let bits = r.u8()?;
        let gap_bits = r.u8()?;
        let coding = r.u8()?;
        if !(1..=8).contains(&bits) || !(1..=8).contains(&gap_bits) || coding > 1 {
            return Err(bad(format!(
                "bits {bits}, gap bits {gap_bits}, coding {coding}"
            )));
        }
        let k = 1usize << bits;
        let codebook: Vec<f32> = (0..k).map(|_| r.f32()).collect::<Result<_>>()?;
        let (syms, gs) = if coding == 1 {
            let s = huffman::decode_from(r, k, n)?;
            let g = huffman::decode_from(r, 1 << gap_bits, n.saturating_mul(2).saturating_add(1))?;
            (s, g)
        } else {
            let s = huffman::unpack_from(r, bits, n)?;
            let g = huffman::unpack_from(r, gap_bits, n.saturating_mul(2).saturating_add(1))?;
            (s, g)
        };
        // Walk the gaps; positions must stay inside n and cover it up to fewer than M.
        let m = (1usize << gap_bits) - 1;
        let mut pos = 0usize;
        let mut elements = 0usize;
        for &g in &gs {
            let g = g as usize;
            pos = pos.saturating_add(g);
            if g < m {
                if pos >= n {
                    return Err(bad("a gap points past the end of the tensor".into()));
                }
                pos += 1;
                elements += 1;
            } else if pos > n {
                return Err(bad("a filler runs past the end of the tensor".into()));
            }
        }
        if n - pos >= m && n > 0 {
            return Err(bad(format!("the gaps cover {pos} of {n} elements")));
        }
        if elements != syms.len() {
            return Err(bad(format!(
                "{elements} positions but {} indices",
                syms.len()
            )));
        }
        let mut indices = vec![0u8; n];
        let mut mask = vec![false; n];
        let mut pos = 0usize;
        let mut it = syms.iter();
        for &g in &gs {
            pos += g as usize;
            if (g as usize) < m {
                mask[pos] = true;
                indices[pos] = it.next().copied().unwrap_or(0);
                pos += 1;
            }
        }
        Ok(SharedTensor {
            codebook,
            indices,
            shape,
            mask,
        })
    }

    /// Decodes a buffer written by [`SharedTensor::encode`]; trailing bytes are an error.
    pub fn decode_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "shared layer");
        let s = Self::decode_from(&mut r)?;
        if r.rest() != 0 {
            return Err(Error::Decode {
                what: "shared layer",
                detail: format!("{} trailing bytes", r.rest()),
            });
        }
        Ok(s)
    }
}

/// Knobs of the `share_fine_tune` pass: plain SGD on the codebooks with the per-cluster summed
/// gradients ([`SharedTensor::finetune_codebook`]), over shuffled batches of the training data.
/// Only centroids change: indices, masks and every other weight stay as they are.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShareTune {
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Learning rate applied to the summed cluster gradients.
    pub lr: f32,
    /// Seed for shuffling (and dropout, if any).
    pub seed: u64,
}

impl Default for ShareTune {
    fn default() -> Self {
        ShareTune {
            epochs: 1,
            batch_size: 64,
            lr: 1e-4,
            seed: 1,
        }
    }
}

/// Fine-tunes the centroids of every shared weight of `g` on `data` (Han et al., 2016, §3.1);
/// the graph's weights are replaced by the decoded shared values after each step. `on_progress`
/// is called after every step; `Break` returns [`Error::Cancelled`].
pub fn finetune(
    g: &mut crate::graph::Graph,
    shared: &mut std::collections::BTreeMap<String, SharedTensor>,
    data: &crate::data::Dataset,
    t: &ShareTune,
    on_progress: &mut dyn FnMut(&crate::train::Progress) -> std::ops::ControlFlow<()>,
) -> Result<()> {
    if data.is_empty() {
        return Err(Error::Invalid("the training set is empty".into()));
    }
    if !t.lr.is_finite() || t.lr < 0.0 {
        return Err(Error::Invalid(format!("share fine-tune: lr {}", t.lr)));
    }
    let pre = crate::data::Preprocess::from_metadata(&g.metadata).unwrap_or_default();
    let mut rng = crate::rng::Rng::new(t.seed);
    let steps = data.len().div_ceil(t.batch_size.max(1));
    for epoch in 0..t.epochs {
        let batches = data.batches(t.batch_size, Some(t.seed.wrapping_add(epoch as u64)));
        for (step, idx) in batches.iter().enumerate() {
            let (x, y) = data.batch(idx, &pre);
            let (loss, grads, correct) = crate::train::step_gradients(g, &x, &y, &mut rng)?;
            if !loss.is_finite() {
                return Err(Error::Diverged { epoch, step, loss });
            }
            for (name, s) in shared.iter_mut() {
                if let Some(gr) = grads.get(name) {
                    s.finetune_codebook(gr, t.lr)?;
                    g.weights.insert(name.clone(), s.decode()?);
                }
            }
            let p = crate::train::Progress {
                epoch,
                epochs: t.epochs,
                step: step + 1,
                steps,
                loss,
                accuracy: correct as f32 / idx.len().max(1) as f32,
                val_accuracy: None,
                lr: t.lr,
            };
            if on_progress(&p).is_break() {
                return Err(Error::Cancelled);
            }
        }
    }
    Ok(())
}

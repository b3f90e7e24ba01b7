//! Every shipped recipe (`recipes/*.json`) parses, survives a JSON round trip, says whether it
//! needs training data, and the ones that need none run on a zoo model.

use lithe::compress::Recipe;
use lithe::data::Dataset;
use std::ops::ControlFlow;

#[test]
fn shipped_recipes_parse_round_trip_and_the_data_free_ones_run() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../recipes");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let r = Recipe::from_json(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!r.passes.is_empty(), "{name}");
        assert_eq!(
            Recipe::from_json(&r.to_json().unwrap()).unwrap(),
            r,
            "{name}"
        );
        let trains = r.passes.iter().any(|p| {
            matches!(
                p.name(),
                "fine_tune" | "share_fine_tune" | "qat" | "distill" | "lottery" | "int8"
            )
        });
        assert_eq!(r.needs_data(), trains, "{name}");
        if !r.needs_data() {
            let g = lithe::zoo::build(lithe::zoo::Arch::Lenet300100, 1).unwrap();
            let eval = Dataset::synthetic(32, 1);
            let out = r
                .apply(&g, None, Some(&eval), &mut |_| ControlFlow::Continue(()))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(out.reports.len(), r.passes.len(), "{name}");
        }
        names.push(name);
    }
    names.sort();
    for want in [
        "binary",
        "deep-compression",
        "distill",
        "int4",
        "int8",
        "int8-integer",
        "log2",
        "lottery",
        "slim",
        "svd",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "missing recipes/{want}.json"
        );
    }
}

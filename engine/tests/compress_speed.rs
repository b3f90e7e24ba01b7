//! How long the playground's no-training knobs take on LeNet-300-100 (a probe, not a test).
use lithe::compress::{Recipe, sparse};
use lithe::format::onnx;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

#[test]
#[ignore = "a timing probe: cargo test -p lithe --test compress_speed -- --ignored --nocapture"]
fn knob_recipe_times() {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let g =
        onnx::import(&std::fs::read(root.join("www/models/lenet-300-100.onnx")).unwrap()).unwrap();
    for json in [
        r#"{"passes": [{"pass": "prune", "by": "per_layer", "ratios": {"fc1": 0.95, "fc2": 0.9, "fc3": 0.9}}]}"#,
        r#"{"passes": [{"pass": "prune", "by": "global", "ratio": 0.9}]}"#,
        r#"{"passes": [{"pass": "prune_filters", "criterion": "l1", "ratio": 0.9}]}"#,
        r#"{"passes": [{"pass": "low_rank", "rank": 16}, {"pass": "prune", "by": "global", "ratio": 0.9}]}"#,
    ] {
        let r = Recipe::from_json(json).unwrap();
        let mut times = Vec::new();
        let mut c = None;
        for _ in 0..10 {
            let t = Instant::now();
            c = Some(
                r.apply(&g, None, None, &mut |_| ControlFlow::Continue(()))
                    .unwrap(),
            );
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let c = c.unwrap();
        let min = times.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "{min:>8.1} ms (best of {}; first {:.1} ms)  {json}",
            times.len(),
            times[0]
        );
        let t = Instant::now();
        let _ = g.clone();
        println!("{:>8.1} ms  clone", t.elapsed().as_secs_f64() * 1e3);
        // What the recipe produced, to compare across versions of the code.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for (k, w) in &c.graph.weights {
            std::hash::Hash::hash(k, &mut h);
            w.iter()
                .for_each(|v| std::hash::Hash::hash(&v.to_bits(), &mut h));
        }
        for (k, m) in &c.masks {
            std::hash::Hash::hash(&(k, m), &mut h);
        }
        std::hash::Hash::hash(&format!("{:?}", c.reports), &mut h);
        std::hash::Hash::hash(
            &lithe::format::lithe::encode_compressed(&c, lithe::compress::kmeans::Coding::Huffman)
                .unwrap()
                .0,
            &mut h,
        );
        println!("         digest {:016x}", std::hash::Hasher::finish(&h));
        let t = Instant::now();
        let table = lithe::compress::energy::EnergyTable::horowitz_45nm();
        lithe::compress::energy::estimate_dense(&g, &table).unwrap();
        c.energy(&table).unwrap();
        println!("{:>8.1} ms  energy", t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let s = lithe::Session::from_graph(c.graph.clone()).unwrap();
        s.info().unwrap();
        println!(
            "{:>8.1} ms  session + info",
            t.elapsed().as_secs_f64() * 1e3
        );
        let t = Instant::now();
        s.kernels().unwrap();
        println!("{:>8.1} ms  plan", t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let n =
            lithe::format::lithe::encode_compressed(&c, lithe::compress::kmeans::Coding::Huffman)
                .unwrap()
                .0
                .len();
        println!(
            "{:>8.1} ms  .lithe ({n} bytes)",
            t.elapsed().as_secs_f64() * 1e3
        );
        let t = Instant::now();
        for w in c.graph.weights.values() {
            sparse::encode_best(w).unwrap();
        }
        println!(
            "{:>8.1} ms  encode_best of every weight",
            t.elapsed().as_secs_f64() * 1e3
        );
        let t = Instant::now();
        c.graph.clone().validate().unwrap();
        lithe::metrics::model_info(&c.graph).unwrap();
        println!(
            "{:>8.1} ms  validate + model_info",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
}

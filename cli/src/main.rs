//! `lithe`: the command-line front end of the Lithe engine.

mod npy;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use lithe::Session;
use lithe::data::{Dataset, Preprocess};
use lithe::zoo::Arch;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "lithe",
    version,
    about = "Inspect, train, evaluate and run neural networks (ONNX) with Lithe"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Pre {
    /// Whatever the model's metadata says (x/255 when it says nothing).
    Auto,
    /// x / 255.
    Unit,
    /// Raw 0..255.
    Raw,
    /// (x/255 − 0.1307) / 0.3081, as PyTorch MNIST examples train.
    MnistNorm,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print a model's layers, parameters, bytes and MACs.
    Info {
        /// An .onnx file or a zoo name (lenet-300-100, lenet-5, mobilenet, tiny-mlp).
        model: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Train a zoo architecture on full MNIST and write it as ONNX.
    Train {
        /// Architecture: lenet-300-100, lenet-5, mobilenet, tiny-mlp.
        #[arg(long)]
        arch: String,
        /// Seed for initialisation, shuffling and the validation split.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Override the recipe's epoch count.
        #[arg(long)]
        epochs: Option<usize>,
        /// Use only the first N training images (quick runs).
        #[arg(long)]
        limit: Option<usize>,
        /// Output file (default: www/models/ARCH.onnx) and manifest update.
        #[arg(short, long)]
        out: Option<PathBuf>,
        /// Folder with train.lmn.gz and test.lmn.gz (default: $LITHE_MNIST_DIR or .data/mnist).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Machine-readable summary.
        #[arg(long)]
        json: bool,
    },
    /// Accuracy, loss, per-class accuracy and confusion matrix on the MNIST test set.
    Eval {
        /// An .onnx file or a zoo name.
        model: String,
        /// Dataset file (.lmn or .lmn.gz); default: the 10k MNIST test set.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Input preprocessing.
        #[arg(long, value_enum, default_value_t = Pre::Auto)]
        preprocess: Pre,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Compress a model with a recipe (JSON; see recipes/) and write .onnx (dense fallback) or
    /// .lithe (the compressed layers as they are encoded: codebooks with Huffman-coded indices,
    /// packed quantized codes, sparse pruned layers).
    Compress {
        /// An .onnx file or a zoo name.
        model: String,
        /// Recipe file, e.g. recipes/deep-compression.json.
        #[arg(long)]
        recipe: PathBuf,
        /// Output file: .lithe or .onnx.
        #[arg(short, long)]
        out: PathBuf,
        /// Also write the pass reports as JSON here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Fine-tuning data (.lmn/.lmn.gz); default: the full training set, else the 6k subset.
        #[arg(long)]
        data: Option<PathBuf>,
        /// A named model for the recipe (a `distill` teacher, `lottery` initial weights):
        /// NAME=MODEL, MODEL an .onnx file or a zoo name; repeatable.
        #[arg(long, value_name = "NAME=MODEL")]
        teacher: Vec<String>,
        /// Machine-readable summary on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Run a model on a raw tensor: .npy in, .npy out (or raw little-endian f32 with --shape).
    Run {
        /// An .onnx file or a zoo name.
        model: String,
        /// Input tensor (.npy, or raw f32 LE with --shape).
        #[arg(long)]
        input: PathBuf,
        /// Output file (.npy) for the first model output.
        #[arg(long)]
        output: PathBuf,
        /// Shape of a raw input, e.g. 1,1,28,28.
        #[arg(long, value_delimiter = ',')]
        shape: Option<Vec<usize>>,
    },
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Info { model, json } => info(&model, json),
        Cmd::Train {
            arch,
            seed,
            epochs,
            limit,
            out,
            data,
            json,
        } => train(&arch, seed, epochs, limit, out, data, json),
        Cmd::Eval {
            model,
            data,
            preprocess,
            json,
        } => eval(&model, data, preprocess, json),
        Cmd::Run {
            model,
            input,
            output,
            shape,
        } => run(&model, &input, &output, shape),
        Cmd::Compress {
            model,
            recipe,
            out,
            report,
            data,
            teacher,
            json,
        } => compress(&model, &recipe, &out, report, data, &teacher, json),
    }
}

/// The repository root when run from a checkout (for www/ and .data/), else the cwd.
fn root() -> PathBuf {
    let dev = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if dev.join("www").is_dir() {
        dev
    } else {
        PathBuf::from(".")
    }
}

fn zoo_dir() -> PathBuf {
    std::env::var_os("LITHE_ZOO_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("www/models"))
}

fn data_dir() -> PathBuf {
    std::env::var_os("LITHE_MNIST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".data/mnist"))
}

fn load_model(model: &str) -> Result<Session> {
    let path = if Path::new(model).exists() {
        PathBuf::from(model)
    } else if Arch::from_name(model).is_ok() {
        zoo_dir().join(format!("{model}.onnx"))
    } else {
        bail!(
            "`{model}` is neither a file nor a zoo name ({})",
            Arch::ALL.map(|a| a.name()).join(", ")
        );
    };
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    Session::from_bytes(&bytes).with_context(|| format!("loading {}", path.display()))
}

/// The dataset at `explicit`, else the first of the full set in the data folder (`full`) and
/// the subset the page ships (`shipped`, under www/data) that exists.
fn find_dataset(
    explicit: Option<PathBuf>,
    full: &str,
    shipped: &str,
    what: &str,
) -> Result<Dataset> {
    let candidates = match explicit {
        Some(p) => vec![p],
        None => vec![data_dir().join(full), root().join("www/data").join(shipped)],
    };
    let p = candidates
        .iter()
        .find(|p| p.exists())
        .with_context(|| format!("no {what} found at {candidates:?}; run `cargo xtask data`"))?;
    Dataset::load(p).with_context(|| format!("reading {}", p.display()))
}

fn test_set(data: Option<PathBuf>) -> Result<Dataset> {
    find_dataset(data, "test.lmn.gz", "mnist-test.lmn.gz", "test set")
}

fn human(n: u64) -> String {
    match n {
        n if n >= 10_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 10_000 => format!("{:.1}k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

fn info(model: &str, json: bool) -> Result<()> {
    let s = load_model(model)?;
    let i = s.info()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&i)?);
        return Ok(());
    }
    println!(
        "{}  input {:?}  preprocess {}",
        i.name,
        i.input_shape,
        s.preprocess()
    );
    println!(
        "{:<24} {:<20} {:<18} {:>10} {:>12} {:>10}",
        "layer", "op", "output", "params", "bytes", "MACs"
    );
    for l in &i.layers {
        println!(
            "{:<24} {:<20} {:<18} {:>10} {:>12} {:>10}",
            l.name,
            l.op,
            format!("{:?}", l.shape),
            l.params,
            l.bytes,
            human(l.macs)
        );
    }
    println!(
        "{:<24} {:<20} {:<18} {:>10} {:>12} {:>10}",
        "total",
        "",
        "",
        i.params,
        i.bytes,
        human(i.macs)
    );
    Ok(())
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}

#[derive(serde::Serialize, serde::Deserialize, Clone)]
struct ManifestEntry {
    arch: String,
    file: String,
    params: usize,
    bytes: u64,
    test_accuracy: f32,
    seed: u64,
    epochs: usize,
    train_images: usize,
    train_seconds: f32,
    command: String,
}

fn train(
    arch: &str,
    seed: u64,
    epochs: Option<usize>,
    limit: Option<usize>,
    out: Option<PathBuf>,
    data: Option<PathBuf>,
    json: bool,
) -> Result<()> {
    let arch = Arch::from_name(arch)?;
    let dir = data.unwrap_or_else(data_dir);
    let full = Dataset::load(dir.join("train.lmn.gz")).with_context(|| {
        format!(
            "reading {}/train.lmn.gz (run `cargo xtask data`)",
            dir.display()
        )
    })?;
    let test = Dataset::load(dir.join("test.lmn.gz"))
        .with_context(|| format!("reading {}/test.lmn.gz", dir.display()))?;
    let full = match limit {
        Some(n) => full.take(n),
        None => full,
    };
    let mut cfg = arch.train_config(seed);
    if let Some(e) = epochs {
        cfg.epochs = e;
    }
    let train_images = full.len() - full.len() / 12;
    let steps = train_images.div_ceil(cfg.batch_size) as u64;
    let pb = (!json).then(|| bar(steps * cfg.epochs as u64, arch.name()));
    let t0 = Instant::now();
    let mut last_step = 0u64;
    let (graph, summary) = lithe::zoo::train_arch(arch, seed, &full, &cfg, &mut |p| {
        if let Some(pb) = &pb {
            let done = p.epoch as u64 * steps + p.step as u64;
            pb.inc(done - last_step);
            last_step = done;
            let va = p
                .val_accuracy
                .map(|v| format!(" val {:.2}%", v * 100.0))
                .unwrap_or_default();
            pb.set_message(format!(
                "epoch {}/{} loss {:.4} acc {:.2}%{va}",
                p.epoch + 1,
                p.epochs,
                p.loss,
                p.accuracy * 100.0
            ));
            if p.val_accuracy.is_some() {
                let line = format!(
                    "epoch {:>2}: loss {:.4} train {:.2}%{va} ({:.1}s)",
                    p.epoch + 1,
                    p.loss,
                    p.accuracy * 100.0,
                    t0.elapsed().as_secs_f32()
                );
                if pb.is_hidden() {
                    eprintln!("{line}")
                } else {
                    pb.println(line)
                }
            }
        }
        ControlFlow::Continue(())
    })?;
    let session = Session::from_graph(graph)?;
    let secs = t0.elapsed().as_secs_f32();
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let report = session.evaluate(&test)?;
    let bytes = session.export_onnx()?;
    let out = out.unwrap_or_else(|| zoo_dir().join(format!("{}.onnx", arch.name())));
    if let Some(p) = out.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    let mut command = format!("lithe train --arch {} --seed {seed}", arch.name());
    if let Some(e) = epochs {
        command += &format!(" --epochs {e}");
    }
    if let Some(n) = limit {
        command += &format!(" --limit {n}");
    }
    let entry = ManifestEntry {
        arch: arch.name().into(),
        file: out
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        params: session.graph().param_count(),
        bytes: bytes.len() as u64,
        test_accuracy: report.accuracy,
        seed,
        epochs: summary.epochs_done,
        train_images,
        train_seconds: secs,
        command,
    };
    let manifest = out.with_file_name("manifest.json");
    let mut entries: Vec<ManifestEntry> = std::fs::read(&manifest)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    entries.retain(|e| e.arch != entry.arch);
    entries.push(entry.clone());
    entries.sort_by_key(|e| Arch::ALL.iter().position(|a| a.name() == e.arch));
    std::fs::write(&manifest, serde_json::to_string_pretty(&entries)? + "\n")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&entry)?);
    } else {
        println!(
            "{}: test accuracy {:.2}% on {} images, {} params, {} bytes, {:.1}s ({:.1}s/epoch) → {}",
            arch.name(),
            report.accuracy * 100.0,
            report.count,
            entry.params,
            entry.bytes,
            secs,
            secs / summary.epochs_done.max(1) as f32,
            out.display()
        );
    }
    Ok(())
}

fn eval(model: &str, data: Option<PathBuf>, pre: Pre, json: bool) -> Result<()> {
    let mut s = load_model(model)?;
    match pre {
        Pre::Auto => {}
        Pre::Unit => s.set_preprocess(Preprocess::default()),
        Pre::Raw => s.set_preprocess(Preprocess::RAW),
        Pre::MnistNorm => s.set_preprocess(Preprocess::MNIST_NORM),
    }
    let test = test_set(data)?;
    let t0 = Instant::now();
    let r = s.evaluate(&test)?;
    let secs = t0.elapsed().as_secs_f32();
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "accuracy {:.2}%  loss {:.4}  on {} images ({:.2}s)",
        r.accuracy * 100.0,
        r.loss,
        r.count,
        secs
    );
    println!(
        "per class: {}",
        r.per_class
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{i}:{:.1}%", a * 100.0))
            .collect::<Vec<_>>()
            .join("  ")
    );
    println!("confusion (rows = true, columns = predicted):");
    print!("     ");
    (0..r.confusion.len()).for_each(|i| print!("{i:>6}"));
    println!();
    for (i, row) in r.confusion.iter().enumerate() {
        print!("{i:>5}");
        row.iter().for_each(|c| print!("{c:>6}"));
        println!();
    }
    Ok(())
}

fn train_set(data: Option<PathBuf>) -> Result<Dataset> {
    find_dataset(
        data,
        "train.lmn.gz",
        "mnist-train-6k.lmn.gz",
        "training set",
    )
}

fn compress(
    model: &str,
    recipe: &Path,
    out: &Path,
    report: Option<PathBuf>,
    data: Option<PathBuf>,
    teachers: &[String],
    json: bool,
) -> Result<()> {
    let s = load_model(model)?;
    let mut graphs = std::collections::BTreeMap::new();
    for t in teachers {
        let (name, m) = t
            .split_once('=')
            .with_context(|| format!("--teacher `{t}`: expected NAME=MODEL"))?;
        graphs.insert(name.to_string(), load_model(m)?.graph().clone());
    }
    let recipe_text =
        std::fs::read_to_string(recipe).with_context(|| format!("reading {}", recipe.display()))?;
    let recipe = lithe::compress::Recipe::from_json(&recipe_text)
        .with_context(|| format!("parsing {}", recipe.display()))?;
    let needs_data = recipe.needs_data();
    let train = if needs_data {
        Some(train_set(data)?)
    } else {
        None
    };
    let test = test_set(None)?;
    let dense = s.export_onnx()?.len();
    let pb = (!json).then(|| bar(0, "compress"));
    let t0 = Instant::now();
    let c = recipe.apply_with(s.graph(), train.as_ref(), Some(&test), graphs, &mut |p| {
        if let Some(pb) = &pb {
            pb.set_length((p.steps * p.epochs) as u64);
            pb.set_position((p.epoch * p.steps + p.step) as u64);
            pb.set_message(format!(
                "fine-tune epoch {}/{} loss {:.4}",
                p.epoch + 1,
                p.epochs,
                p.loss
            ));
        }
        ControlFlow::Continue(())
    })?;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let is_lithe = out.extension().is_some_and(|e| e == "lithe");
    let (bytes, sections) = if is_lithe {
        let (b, sec) =
            lithe::format::lithe::encode_compressed(&c, lithe::compress::kmeans::Coding::Huffman)?;
        (b, Some(sec))
    } else {
        (c.export_onnx()?, None)
    };
    std::fs::write(out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    let table = lithe::compress::energy::EnergyTable::horowitz_45nm();
    let energy = c.energy(&table)?;
    let energy_dense = lithe::compress::energy::estimate_dense(s.graph(), &table)?;
    let summary = serde_json::json!({
        "model": model,
        "out": out.display().to_string(),
        "dense_onnx_bytes": dense,
        "out_bytes": bytes.len(),
        "ratio": dense as f64 / bytes.len().max(1) as f64,
        "sections": sections,
        "passes": c.reports,
        "energy": energy,
        "energy_dense": energy_dense,
        "energy_table": table,
        "seconds": t0.elapsed().as_secs_f32(),
    });
    if let Some(r) = report {
        std::fs::write(&r, serde_json::to_string_pretty(&summary)? + "\n")
            .with_context(|| format!("writing {}", r.display()))?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    let pct = |a: Option<f32>| {
        a.map(|a| format!("{:.2}%", a * 100.0))
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "{:<16} {:>12} {:>12} {:>9} {:>9} {:>9}",
        "pass", "bytes before", "bytes after", "sparsity", "acc before", "acc after"
    );
    for r in &c.reports {
        println!(
            "{:<16} {:>12} {:>12} {:>8.1}% {:>9} {:>9}",
            r.pass,
            r.bytes_before,
            r.bytes_after,
            r.sparsity * 100.0,
            pct(r.accuracy_before),
            pct(r.accuracy_after)
        );
    }
    if let Some(last) = c.reports.last() {
        println!(
            "\n{:<16} {:>10} {:>10} {:>5} {:>12} {:>12}  encoding",
            "layer", "params", "nonzero", "bits", "bytes before", "bytes after"
        );
        for l in &last.layers {
            println!(
                "{:<16} {:>10} {:>10} {:>5} {:>12} {:>12}  {}",
                l.name, l.params, l.nonzero, l.bits, l.bytes_before, l.bytes_after, l.encoding
            );
        }
    }
    if let Some(sec) = sections {
        println!(
            "\n.lithe sections: headers {} + graph {} + codebooks {} + tables {} + indices {} + gaps {} + codes {} + sparse {}",
            sec.headers,
            sec.graph,
            sec.codebooks,
            sec.tables,
            sec.indices,
            sec.gaps,
            sec.codes,
            sec.sparse
        );
    }
    let uj = |e: &lithe::compress::energy::EnergyReport| {
        format!(
            "{:.2} µJ (compute {:.2}, weights {:.2} from {}, activations {:.2})",
            e.total_pj / 1e6,
            e.compute_pj / 1e6,
            e.weight_pj / 1e6,
            if e.weights_on_chip { "SRAM" } else { "DRAM" },
            e.activation_pj / 1e6
        )
    };
    println!(
        "\nenergy per image (45 nm estimate, Horowitz 2014; docs/COMPRESSION.md):\n  dense      {}\n  compressed {}",
        uj(&energy_dense),
        uj(&energy)
    );
    if !is_lithe && c.int8.is_some() {
        println!("note: .onnx holds the integer-only int8 model as a QDQ graph (int8 weights)");
    } else if !is_lithe && (!c.quantized.is_empty() || !c.shared.is_empty() || !c.lowbit.is_empty())
    {
        println!(
            "note: .onnx holds the compressed weights decoded to dense f32 (the dense fallback); \
             write .lithe for the encoded layers ({} bytes by the last pass's report)",
            c.reports.last().map_or(0, |r| r.bytes_after)
        );
    }
    println!(
        "{} → {}: {} bytes, {:.1}× smaller than the dense f32 ONNX ({} bytes), {:.1}s",
        model,
        out.display(),
        bytes.len(),
        dense as f64 / bytes.len().max(1) as f64,
        dense,
        t0.elapsed().as_secs_f32()
    );
    Ok(())
}

fn run(model: &str, input: &Path, output: &Path, shape: Option<Vec<usize>>) -> Result<()> {
    let s = load_model(model)?;
    let bytes = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let (shape, data) = match shape {
        Some(sh) => {
            if bytes.len() % 4 != 0 {
                bail!(
                    "raw input has {} bytes, not a whole number of f32 values",
                    bytes.len()
                );
            }
            (sh, npy::from_le(&bytes))
        }
        None => npy::read(&bytes).with_context(|| {
            format!(
                "reading {} as .npy (use --shape for raw f32)",
                input.display()
            )
        })?,
    };
    let x = lithe::tensor::from_vec(&shape, data)?;
    let out = s.run(&x)?;
    let y = out.first().context("the model has no output")?;
    let flat: Vec<f32> = y.iter().copied().collect();
    std::fs::write(output, npy::write(y.shape(), &flat))
        .with_context(|| format!("writing {}", output.display()))?;
    eprintln!("wrote {} {:?}", output.display(), y.shape());
    Ok(())
}

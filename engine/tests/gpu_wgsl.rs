//! Every WGSL shader under `engine/src/gpu/` parses and validates with naga (the WGSL front end
//! wgpu itself uses), in plain `cargo test`: no GPU and no `gpu` feature needed, so a shader
//! typo fails CI on any machine.

use std::path::{Path, PathBuf};

fn shaders(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {dir:?}: {e}"));
    for e in entries {
        let p = e.expect("directory entry").path();
        if p.is_dir() {
            shaders(&p, out);
        } else if p.extension().is_some_and(|x| x == "wgsl") {
            out.push(p);
        }
    }
}

fn validate(src: &str) -> Result<naga::Module, String> {
    let module = naga::front::wgsl::parse_str(src).map_err(|e| e.emit_to_string(src))?;
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::default(),
    )
    .validate(&module)
    .map_err(|e| e.emit_to_string(src))?;
    Ok(module)
}

#[test]
fn every_gpu_shader_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/gpu");
    let mut files = Vec::new();
    shaders(&dir, &mut files);
    files.sort();
    // The backend ships these five; a missing one means the walk looked in the wrong place.
    let names: Vec<String> = files
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    for want in [
        "conv2d.wgsl",
        "elementwise.wgsl",
        "int8_matmul.wgsl",
        "matmul.wgsl",
        "pool.wgsl",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} not found in {names:?}"
        );
    }
    let mut failures = Vec::new();
    for f in &files {
        let src = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("cannot read {f:?}: {e}"));
        match validate(&src) {
            Ok(m) => assert!(
                m.entry_points
                    .iter()
                    .all(|e| e.stage == naga::ShaderStage::Compute),
                "{f:?}: every entry point must be a compute shader"
            ),
            Err(e) => failures.push(format!("{}:\n{e}", f.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "invalid WGSL:\n{}",
        failures.join("\n")
    );
}

#[test]
fn the_validator_rejects_a_broken_shader() {
    // A type error naga must catch, so the test above cannot pass vacuously.
    let bad = "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }";
    assert!(validate(bad).is_err());
    let good = "@compute @workgroup_size(1) fn main() { let x: u32 = 1u; }";
    assert!(validate(good).is_ok(), "{:?}", validate(good).err());
}

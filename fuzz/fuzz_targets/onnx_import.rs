//! Any bytes given to the ONNX importer give a graph or an error, never a panic; an imported
//! graph also survives shape inference, export and planning (QDQ fusion, int8 weight packing).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = lithe::format::onnx::import(data)
        && g.infer_shapes(1).is_ok()
    {
        let _ = lithe::format::onnx::export(&g);
        let _ = lithe::plan::Plan::new(&g);
    }
});

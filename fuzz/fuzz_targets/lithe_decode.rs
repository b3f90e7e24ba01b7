//! Any bytes given to the `.lithe` container decoder give a graph or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = lithe::format::lithe::decode(data) {
        let _ = g.infer_shapes(1);
    }
});

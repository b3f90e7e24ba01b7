//! Any bytes given to the dataset decoder give a dataset or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = lithe::data::Dataset::decode(data);
});

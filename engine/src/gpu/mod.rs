//! The WebGPU backend (feature `gpu`): one [`GpuContext`] holding the adapter's description,
//! the device, the queue and the compute pipelines (each created once, on first use, and
//! cached); one launcher per kernel family with its `.wgsl` shader beside it; and
//! [`GpuSession`], which runs a whole [`crate::graph::Graph`] on the GPU, falling back to the
//! CPU reference node by node for the ops it has no kernel for.
//!
//! Readback is always asynchronous (`map_async`, then an awaited one-shot): natively the device
//! is polled until the copy is done; in the browser the promise resolves on the event loop, so
//! the page's thread never blocks. docs/KERNELS.md ("WebGPU") describes the design.
//!
//! Every shader is parsed and validated with naga by `engine/tests/gpu_wgsl.rs` in plain
//! `cargo test` (no GPU and no feature needed).

pub mod check;
mod context;
pub mod conv2d;
pub mod elementwise;
pub mod int8_matmul;
pub mod matmul;
pub mod pool;
mod session;

pub use context::{AdapterSummary, GpuContext, GpuTensor};
pub use session::{Device, GpuRun, GpuSession, NodeDevice};

//! The Lithe playground: what its two binaries share.
//!
//! The page runs two WebAssembly modules built from this crate:
//!
//! - `lithe-app` (`src/main.rs`): the Leptos UI. It never computes anything heavy.
//! - `worker` (`src/bin/worker.rs`): a Web Worker that owns the engine ([`lithe::Session`]).
//!
//! They talk only through the messages in [`protocol`]. [`digit`] turns a drawing into an
//! MNIST-like 28×28 image (cheap enough for the UI thread, pure so it is tested natively).

pub mod digit;
pub mod protocol;
pub mod sweep;

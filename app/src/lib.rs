//! The Lithe playground: what its two binaries share.
//!
//! The page runs two WebAssembly modules built from this crate:
//!
//! - `lithe-app` (`src/main.rs`): the Leptos UI. It never computes anything heavy.
//! - `worker` (`src/bin/worker.rs`): a Web Worker that owns the engine ([`lithe::Session`]).
//!
//! They talk only through the messages in [`protocol`]. [`digit`] turns a drawing into an
//! MNIST-like 28×28 image (cheap enough for the UI thread, pure so it is tested natively).
//! The UI's [`components`] (with [`bridge`], [`state`] and [`format`]) live here too, so that
//! `tests/components.rs` can mount them in a browser; the worker binary does not use them.

// The UI's modules name shared items as `lithe_app::…`, as the binaries do.
extern crate self as lithe_app;

pub mod bridge;
pub mod components;
pub mod digit;
pub mod format;
pub mod heartbeat;
pub mod protocol;
pub mod state;
pub mod sweep;

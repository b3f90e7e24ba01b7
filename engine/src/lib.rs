//! # Lithe
//!
//! Make neural networks lightweight, in the browser or natively. The data flow is also the
//! module order: [`format`] imports a model into a [`graph::Graph`]; [`train`] fine-tunes it on a
//! [`data::Dataset`]; [`exec`] runs it with the reference ops; [`metrics`] measures it; [`format`]
//! exports it again.
//!
//! ```
//! use lithe::{zoo, data::Dataset, train::{TrainConfig, train}, metrics::evaluate};
//! // A tiny synthetic dataset stands in for MNIST here.
//! let data = Dataset::synthetic(256, 7);
//! let mut g = zoo::build(zoo::Arch::TinyMlp, 1).unwrap();
//! let cfg = TrainConfig { epochs: 2, batch_size: 32, ..TrainConfig::default() };
//! train(&mut g, &data, None, &cfg, &mut |_| std::ops::ControlFlow::Continue(())).unwrap();
//! let report = evaluate(&g, &data, 64).unwrap();
//! assert!(report.accuracy > 0.5);
//! let bytes = lithe::format::onnx::export(&g).unwrap();
//! let back = lithe::format::onnx::import(&bytes).unwrap();
//! assert_eq!(back.nodes.len(), g.nodes.len());
//! ```
#![warn(missing_docs)]

pub mod bench;
pub mod compress;
pub mod data;
mod error;
pub mod exec;
pub mod format;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod graph;
#[cfg(feature = "js")]
pub mod js;
pub mod kernels;
pub mod metrics;
pub mod ops;
pub mod plan;
pub mod rng;
pub mod session;
pub mod tensor;
pub mod train;
pub mod zoo;

pub use error::{Error, Result};
pub use session::Session;

//! The UI's components, one per file. Each takes its data as props (documented on the
//! component) and reports user actions through callbacks; only [`app::App`] talks to the worker.

pub mod app;
pub mod compress_panel;
pub mod draw_pad;
pub mod error_banner;
pub mod fine_tune_panel;
pub mod header;
pub mod histogram;
pub mod layer_table;
pub mod metrics_panel;
pub mod model_panel;
pub mod model_upload;
pub mod prediction;
pub mod sweep_panel;

//! The one error type of the engine.

use thiserror::Error;

/// Result alias used across the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure the engine can report. Each variant names what went wrong and where, so the UI,
/// the CLI and the JS API can show it as it is.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor's shape does not fit the operation applied to it.
    #[error("shape mismatch in {op} at node `{node}`: {detail} (shapes: {shapes})")]
    Shape {
        /// Node name.
        node: String,
        /// Op name.
        op: &'static str,
        /// Human-readable description of the constraint.
        detail: String,
        /// The shapes involved, rendered as `[a, b] vs [c, d]`.
        shapes: String,
    },
    /// A graph is malformed: a dangling input, a cycle, a duplicate output, a missing weight.
    #[error("invalid graph: {0}")]
    Graph(String),
    /// An attribute value is outside what the op accepts.
    #[error("invalid attribute `{attr}` on node `{node}` ({op}): {detail}")]
    Attribute {
        /// Node name.
        node: String,
        /// Op name.
        op: &'static str,
        /// Attribute name.
        attr: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The model file uses operators the engine does not support; all of them are listed.
    #[error("unsupported operators: {}", .0.join(", "))]
    UnsupportedOps(Vec<String>),
    /// A model or data file could not be decoded.
    #[error("cannot decode {what}: {detail}")]
    Decode {
        /// What was being decoded (`ONNX model`, `MNIST test set`...).
        what: &'static str,
        /// Why it failed.
        detail: String,
    },
    /// A declared size exceeds a documented limit (protects against hostile files).
    #[error("{what} is too large: {got} exceeds the limit of {limit}")]
    Limit {
        /// The quantity being checked.
        what: &'static str,
        /// The value found.
        got: u64,
        /// The allowed maximum.
        limit: u64,
    },
    /// An input was missing or had the wrong shape when running a model.
    #[error("bad input `{name}`: {detail}")]
    Input {
        /// Input name.
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// A request could not be satisfied because of its arguments (unknown zoo name, bad knob...).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The training or evaluation job was cancelled by the caller.
    #[error("cancelled")]
    Cancelled,
    /// Training diverged (a loss or weight became NaN or infinite).
    #[error("training diverged at epoch {epoch}, step {step}: loss = {loss}")]
    Diverged {
        /// Epoch index (0-based).
        epoch: usize,
        /// Step within the epoch.
        step: usize,
        /// The non-finite loss.
        loss: f32,
    },
    /// The GPU backend cannot run: no adapter (no `navigator.gpu`, no Vulkan driver), a device
    /// that failed, or a problem too large for its buffers.
    #[error("GPU: {0}")]
    Gpu(String),
    /// An I/O failure (native only).
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The path involved.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl Error {
    /// A short stable code for this error, for JS `Error.code` and JSON reports.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Shape { .. } => "shape",
            Error::Graph(_) => "graph",
            Error::Attribute { .. } => "attribute",
            Error::UnsupportedOps(_) => "unsupported_ops",
            Error::Decode { .. } => "decode",
            Error::Limit { .. } => "limit",
            Error::Input { .. } => "input",
            Error::Invalid(_) => "invalid",
            Error::Cancelled => "cancelled",
            Error::Diverged { .. } => "diverged",
            Error::Gpu(_) => "gpu",
            Error::Io { .. } => "io",
        }
    }

    /// Builds a [`Error::Shape`] with the shapes rendered.
    pub fn shape(
        node: &str,
        op: &'static str,
        detail: impl Into<String>,
        shapes: &[&[usize]],
    ) -> Self {
        Error::Shape {
            node: node.to_string(),
            op,
            detail: detail.into(),
            shapes: shapes
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(" vs "),
        }
    }
}

//! ONNX import and export.
//!
//! [`import`] turns the bytes of an `.onnx` file into a validated [`Graph`]; [`export`] writes a
//! [`Graph`] back as a self-contained ONNX model (IR 8, default-domain opset
//! [`EXPORT_OPSET`], or the newer one an op needs: HardSwish 14, LayerNormalization 17, wrap
//! Pad 19, Gelu 20). The protobuf types in [`proto`] are generated ahead of time by
//! `tools/onnx-protogen` and checked in, so the build needs no `protoc`.
//!
//! # What is imported
//!
//! Default-domain opsets [`MIN_OPSET`]..=[`MAX_OPSET`], with one small builder per ONNX op type
//! (see [`SUPPORTED_OPS`]): the graph ops of [`crate::graph::Op`] plus `Constant` (becomes a
//! weight) and `Identity` (folded away). Opset-specific forms are honoured: Clip bounds as
//! attributes (opset < 11) or constant inputs, Reshape's shape as a constant input, Softmax's
//! axis default and 2-D coercion before opset 13, Dropout's ratio as an attribute or constant
//! input, BatchNormalization's `spatial` and extra training outputs, Squeeze/Unsqueeze axes as
//! attributes (opset < 13) or constant inputs, Pad's pads and value as attributes (opset < 11)
//! or constant inputs (with `axes` from 18, `wrap` from 19).
//!
//! The quantization ops (QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, QLinearConv,
//! QLinearMatMul, MatMulInteger, ConvInteger) and Cast are imported with int8, uint8 and int32
//! tensors (initializers and graph inputs), carried as exact integers in `f32` tensors; every
//! node's input element types are checked against its op (see `crate::ops` quant and
//! [`crate::graph::Graph::dtypes`]). Q/DQ take a per-tensor scale before opset 13 and a
//! per-axis one (`axis`) from 13 on; opset 21's `output_dtype` is honoured and `block_size`
//! refused. Scales and zero points may be constants or computed at run time.
//!
//! `Shape` is folded at import when the shape of its input is known: fully static shapes become
//! constants; a batch-dependent dim is tracked through `Gather`, `Unsqueeze`, `Squeeze` and
//! `Concat` of such constants and, in a Reshape target, becomes `0` (the same dim of the
//! reshaped input at the same position) or `-1` (one other dim), which covers the
//! `x.view(x.size(0), -1)` pattern of PyTorch exports. `Gather` on runtime data is refused. Graph inputs that have an
//! initializer (IR 3 style) are weights, not runtime inputs. Every unsupported op type is listed
//! in one [`crate::Error::UnsupportedOps`] before anything is built.
//!
//! # Limits
//!
//! Hostile files fail with an error, never a panic or a huge allocation: see [`LIMITS`].

#[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
#[rustfmt::skip]
pub mod proto {
    //! Prost types generated from `onnx.proto` (ONNX 1.17.0) by `tools/onnx-protogen`.
    include!("generated.rs");
}

mod builders;
mod export;
mod import;
mod tensor;

use crate::Result;
use crate::graph::Graph;

/// Limits enforced while importing; anything larger is refused with [`crate::Error::Limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted file, in bytes.
    pub max_file_bytes: usize,
    /// Most nodes in the graph ([`crate::graph::limits::MAX_NODES`]).
    pub max_nodes: usize,
    /// Most elements in one tensor, weight or declared input
    /// ([`crate::graph::limits::MAX_TENSOR_ELEMENTS`]).
    pub max_tensor_elements: usize,
    /// Highest rank of a tensor ([`crate::graph::limits::MAX_RANK`]).
    pub max_rank: usize,
    /// Largest kernel size, stride, dilation or padding of a convolution or pooling window.
    pub max_window: usize,
}

/// The limits [`import`] enforces.
pub const LIMITS: Limits = Limits {
    max_file_bytes: 1 << 30,
    max_nodes: crate::graph::limits::MAX_NODES,
    max_tensor_elements: crate::graph::limits::MAX_TENSOR_ELEMENTS,
    max_rank: crate::graph::limits::MAX_RANK,
    max_window: 1 << 16,
};

/// Oldest default-domain opset [`import`] accepts.
pub const MIN_OPSET: i64 = 7;
/// Newest default-domain opset [`import`] accepts.
pub const MAX_OPSET: i64 = 21;
/// The default-domain opset [`export`] writes (every op Lithe emits is valid there).
pub const EXPORT_OPSET: i64 = 13;
/// The IR version [`export`] writes.
pub const EXPORT_IR_VERSION: i64 = 8;

/// ONNX op types [`import`] understands, in registry order.
pub const SUPPORTED_OPS: &[&str] = &builders::OP_TYPES;

/// Decodes an ONNX model and builds a validated [`Graph`].
///
/// Errors: [`crate::Error::Decode`] for bytes that are not a usable ONNX model (truncated,
/// external data, wrong element types...), [`crate::Error::UnsupportedOps`] listing every
/// unsupported op type at once, [`crate::Error::Limit`] beyond [`LIMITS`],
/// [`crate::Error::Attribute`] for attribute values Lithe cannot honour, and
/// [`crate::Error::Graph`] when the resulting graph is malformed.
pub fn import(bytes: &[u8]) -> Result<Graph> {
    import::import(bytes)
}

/// Encodes a graph as an ONNX model (IR 8, opset 13 or the newest an op needs, weights as
/// `raw_data` initializers).
/// The same graph always gives the same bytes.
///
/// Errors: [`crate::Error::Graph`]/[`crate::Error::Shape`] when the graph's shapes cannot be
/// inferred, [`crate::Error::Attribute`] for attributes opset 13 cannot express.
pub fn export(g: &Graph) -> Result<Vec<u8>> {
    export::export(g)
}

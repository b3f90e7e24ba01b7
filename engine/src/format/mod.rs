//! Model file formats: ONNX import/export.

pub mod onnx;

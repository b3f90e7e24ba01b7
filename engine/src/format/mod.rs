//! Model file formats: ONNX import/export and the `.lithe` container.

pub mod lithe;
pub mod onnx;

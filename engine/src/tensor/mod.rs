//! Tensors: dense `f32` arrays backed by `ndarray`, plus helpers that check shapes instead of
//! panicking.

use crate::{Error, Result};
use ndarray::{ArrayD, IxDyn};

/// A dense, row-major `f32` tensor of any rank.
pub type Tensor = ArrayD<f32>;

/// Element type of a tensor as stored in a model file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// Signed 8-bit integer.
    I8,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
}

/// Largest magnitude below which every integer is exactly representable in an `f32`
/// (2^24). Integer values are carried through the graph as `f32` tensors holding exact
/// integers: always exact for [`DType::I8`] and [`DType::U8`], exact for [`DType::I32`] only
/// while `|v| ≤ 2^24` (larger int32 accumulations are rounded to the nearest `f32`, which is
/// what an ONNX `Cast` to float would give anyway).
pub const F32_EXACT_INT: i64 = 1 << 24;

impl DType {
    /// The type as ONNX spells it (`float`, `int8`...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float",
            DType::I8 => "int8",
            DType::U8 => "uint8",
            DType::I32 => "int32",
            DType::I64 => "int64",
        }
    }

    /// Whether the type is an integer type.
    pub fn is_int(self) -> bool {
        !matches!(self, DType::F32)
    }

    /// Smallest and largest value of an integer type (`None` for `F32`).
    pub fn range(self) -> Option<(i64, i64)> {
        match self {
            DType::F32 => None,
            DType::I8 => Some((-128, 127)),
            DType::U8 => Some((0, 255)),
            DType::I32 => Some((i64::from(i32::MIN), i64::from(i32::MAX))),
            DType::I64 => Some((i64::MIN, i64::MAX)),
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Builds a tensor from a shape and its row-major data, checking that the sizes agree.
pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Result<Tensor> {
    let n = checked_numel(shape)?;
    if n != data.len() {
        return Err(Error::Invalid(format!(
            "tensor of shape {shape:?} needs {n} values, got {}",
            data.len()
        )));
    }
    ArrayD::from_shape_vec(IxDyn(shape), data).map_err(|e| Error::Invalid(e.to_string()))
}

/// A tensor of zeros.
pub fn zeros(shape: &[usize]) -> Tensor {
    ArrayD::zeros(IxDyn(shape))
}

/// Number of elements of `shape`, or an error when the product overflows `usize`.
pub fn checked_numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or(Error::Limit {
            what: "tensor element count",
            got: u64::MAX,
            limit: usize::MAX as u64,
        })
}

/// Returns the tensor's data as a contiguous row-major slice, copying only if needed.
pub fn to_contiguous(t: &Tensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(t.iter().copied().collect()),
    }
}

/// Makes a tensor standard (row-major contiguous) layout, reusing storage when already so.
pub fn into_standard(t: Tensor) -> Tensor {
    if t.is_standard_layout() {
        t
    } else {
        t.as_standard_layout().into_owned()
    }
}

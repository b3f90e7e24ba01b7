//! `TensorProto` decoding and encoding, with every size checked against the data actually
//! present before anything is allocated.

use super::LIMITS;
use super::proto::TensorProto;
use super::proto::tensor_proto::{DataLocation, DataType};
use crate::tensor::{self, DType, Tensor};
use crate::{Error, Result};

/// A constant value known at import time: an initializer, a `Constant` node's output or a
/// folded `Reshape`/`Flatten` of one.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Const {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Elements, row-major.
    pub data: Data,
}

/// Element storage of a [`Const`].
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Data {
    /// Floating point (float, double and float16 files all land here).
    F32(Vec<f32>),
    /// 64-bit integers, used for shapes, axes and indices.
    I64(Vec<i64>),
    /// int32 (shapes and indices in some files, quantized biases).
    I32(Vec<i32>),
    /// int8 (quantized weights and zero points).
    I8(Vec<i8>),
    /// uint8 (quantized weights and zero points).
    U8(Vec<u8>),
}

impl Const {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::I32(v) => v.len(),
            Data::I8(v) => v.len(),
            Data::U8(v) => v.len(),
        }
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match &self.data {
            Data::F32(_) => DType::F32,
            Data::I64(_) => DType::I64,
            Data::I32(_) => DType::I32,
            Data::I8(_) => DType::I8,
            Data::U8(_) => DType::U8,
        }
    }

    /// The elements of an integer constant (`None` for float data).
    pub fn ints(&self) -> Option<Vec<i64>> {
        match &self.data {
            Data::F32(_) => None,
            Data::I64(v) => Some(v.clone()),
            Data::I32(v) => Some(v.iter().map(|&x| i64::from(x)).collect()),
            Data::I8(v) => Some(v.iter().map(|&x| i64::from(x)).collect()),
            Data::U8(v) => Some(v.iter().map(|&x| i64::from(x)).collect()),
        }
    }

    /// The elements as integers (floats must be whole numbers).
    pub fn as_i64(&self) -> Option<Vec<i64>> {
        match &self.data {
            Data::F32(v) => v
                .iter()
                .map(|&x| (x.fract() == 0.0 && x.abs() < 9.0e15).then_some(x as i64))
                .collect(),
            _ => self.ints(),
        }
    }

    /// The single element of a one-element constant, as a float.
    pub fn scalar_f32(&self) -> Option<f32> {
        if self.len() != 1 {
            return None;
        }
        match &self.data {
            Data::F32(v) => v.first().copied(),
            _ => self.ints()?.first().map(|&x| x as f32),
        }
    }

    /// The elements at the given flat indices (every index must be below [`Const::len`]).
    pub fn select(&self, order: &[usize]) -> Data {
        fn pick<T: Copy>(v: &[T], order: &[usize]) -> Vec<T> {
            order.iter().filter_map(|&i| v.get(i).copied()).collect()
        }
        match &self.data {
            Data::F32(v) => Data::F32(pick(v, order)),
            Data::I64(v) => Data::I64(pick(v, order)),
            Data::I32(v) => Data::I32(pick(v, order)),
            Data::I8(v) => Data::I8(pick(v, order)),
            Data::U8(v) => Data::U8(pick(v, order)),
        }
    }

    /// The constant as an `f32` tensor (without copying float data): floats as they are, int8,
    /// uint8 and int32 as exact integers (an int32 beyond ±2^24 is an error, since `f32` cannot
    /// hold it exactly); `None` for int64 data (shapes, axes, indices).
    pub fn into_tensor(self) -> Option<Result<Tensor>> {
        let ints: Vec<f32> = match self.data {
            Data::F32(v) => return Some(tensor::from_vec(&self.shape, v)),
            Data::I64(_) => return None,
            Data::I8(v) => v.into_iter().map(f32::from).collect(),
            Data::U8(v) => v.into_iter().map(f32::from).collect(),
            Data::I32(v) => {
                if let Some(x) = v
                    .iter()
                    .find(|x| i64::from(**x).abs() > tensor::F32_EXACT_INT)
                {
                    return Some(Err(decode_err(format!(
                        "int32 value {x} cannot be held exactly (Lithe carries integers in f32, \
                         exact up to ±2^24)"
                    ))));
                }
                v.into_iter().map(|x| x as f32).collect()
            }
        };
        Some(tensor::from_vec(&self.shape, ints))
    }
}

fn decode_err(detail: String) -> Error {
    Error::Decode {
        what: "ONNX model",
        detail,
    }
}

/// Checks a declared shape: rank, non-negative dims, element count within [`LIMITS`].
pub(super) fn checked_shape(what: &str, dims: &[i64]) -> Result<(Vec<usize>, usize)> {
    if dims.len() > LIMITS.max_rank {
        return Err(Error::Limit {
            what: "tensor rank",
            got: dims.len() as u64,
            limit: LIMITS.max_rank as u64,
        });
    }
    let mut shape = Vec::with_capacity(dims.len());
    for &d in dims {
        let d = usize::try_from(d)
            .map_err(|_| decode_err(format!("{what} has a negative dimension in {dims:?}")))?;
        if d > LIMITS.max_tensor_elements {
            return Err(Error::Limit {
                what: "tensor dimension",
                got: d as u64,
                limit: LIMITS.max_tensor_elements as u64,
            });
        }
        shape.push(d);
    }
    let n = tensor::checked_numel(&shape)?;
    if n > LIMITS.max_tensor_elements {
        return Err(Error::Limit {
            what: "tensor element count",
            got: n as u64,
            limit: LIMITS.max_tensor_elements as u64,
        });
    }
    Ok((shape, n))
}

/// Splits `raw` into `n` little-endian words of `N` bytes, checking the length first.
fn words<'a, const N: usize>(
    name: &str,
    raw: &'a [u8],
    n: usize,
) -> Result<impl Iterator<Item = [u8; N]> + 'a> {
    let want = n.checked_mul(N);
    if want != Some(raw.len()) {
        return Err(decode_err(format!(
            "tensor `{name}`: raw_data has {} bytes, but its dims need {n} elements of {N} bytes",
            raw.len()
        )));
    }
    Ok(raw.chunks_exact(N).map(|c| {
        let mut w = [0u8; N];
        w.copy_from_slice(c);
        w
    }))
}

fn typed_len(name: &str, got: usize, n: usize, field: &str) -> Result<()> {
    if got != n {
        return Err(decode_err(format!(
            "tensor `{name}`: {field} has {got} values, but its dims need {n}"
        )));
    }
    Ok(())
}

/// IEEE half to single precision.
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: value = man · 2^-24.
            let v = man as f32 * f32::from_bits(0x3380_0000);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, _) => sign | 0x7fc0_0000,
        _ => sign | ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// Decodes a tensor's value. External data, segments and element types other than
/// float/double/float16/int32/int64 are refused.
pub(super) fn decode(mut t: TensorProto) -> Result<Const> {
    let name = t.name().to_string();
    let name = name.as_str();
    if t.data_location() == DataLocation::External || !t.external_data.is_empty() {
        let loc = t
            .external_data
            .iter()
            .find(|e| e.key() == "location")
            .map(|e| format!(" (`{}`)", e.value()))
            .unwrap_or_default();
        return Err(decode_err(format!(
            "tensor `{name}` keeps its data in an external file{loc}; Lithe reads single-file models only \
             (re-save with onnx.save_model(model, path, save_as_external_data=False))"
        )));
    }
    if t.segment.is_some() {
        return Err(decode_err(format!(
            "tensor `{name}` is segmented, which is not supported"
        )));
    }
    let (shape, n) = checked_shape(&format!("tensor `{name}`"), &t.dims)?;
    let raw = t.raw_data.take().unwrap_or_default();
    let raw = raw.as_slice();
    let use_raw = !raw.is_empty() || n == 0;
    let dt = DataType::try_from(t.data_type()).ok();
    let data = match dt {
        Some(DataType::Float) if use_raw && t.float_data.is_empty() => {
            Data::F32(words::<4>(name, raw, n)?.map(f32::from_le_bytes).collect())
        }
        Some(DataType::Float) => {
            typed_len(name, t.float_data.len(), n, "float_data")?;
            Data::F32(std::mem::take(&mut t.float_data))
        }
        Some(DataType::Double) if use_raw && t.double_data.is_empty() => Data::F32(
            words::<8>(name, raw, n)?
                .map(|w| f64::from_le_bytes(w) as f32)
                .collect(),
        ),
        Some(DataType::Double) => {
            typed_len(name, t.double_data.len(), n, "double_data")?;
            Data::F32(t.double_data.iter().map(|&v| v as f32).collect())
        }
        Some(DataType::Float16) if use_raw && t.int32_data.is_empty() => Data::F32(
            words::<2>(name, raw, n)?
                .map(|w| f16_to_f32(u16::from_le_bytes(w)))
                .collect(),
        ),
        Some(DataType::Float16) => {
            typed_len(name, t.int32_data.len(), n, "int32_data")?;
            Data::F32(t.int32_data.iter().map(|&v| f16_to_f32(v as u16)).collect())
        }
        Some(DataType::Int64) if use_raw && t.int64_data.is_empty() => {
            Data::I64(words::<8>(name, raw, n)?.map(i64::from_le_bytes).collect())
        }
        Some(DataType::Int64) => {
            typed_len(name, t.int64_data.len(), n, "int64_data")?;
            Data::I64(std::mem::take(&mut t.int64_data))
        }
        Some(DataType::Int32) if use_raw && t.int32_data.is_empty() => {
            Data::I32(words::<4>(name, raw, n)?.map(i32::from_le_bytes).collect())
        }
        Some(DataType::Int32) => {
            typed_len(name, t.int32_data.len(), n, "int32_data")?;
            Data::I32(std::mem::take(&mut t.int32_data))
        }
        Some(DataType::Int8) if use_raw && t.int32_data.is_empty() => {
            Data::I8(words::<1>(name, raw, n)?.map(i8::from_le_bytes).collect())
        }
        Some(DataType::Int8) => {
            typed_len(name, t.int32_data.len(), n, "int32_data")?;
            Data::I8(
                t.int32_data
                    .iter()
                    .map(|&v| i8::try_from(v))
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|_| {
                        decode_err(format!("tensor `{name}`: an int8 value is out of range"))
                    })?,
            )
        }
        Some(DataType::Uint8) if use_raw && t.int32_data.is_empty() => {
            Data::U8(words::<1>(name, raw, n)?.map(u8::from_le_bytes).collect())
        }
        Some(DataType::Uint8) => {
            typed_len(name, t.int32_data.len(), n, "int32_data")?;
            Data::U8(
                t.int32_data
                    .iter()
                    .map(|&v| u8::try_from(v))
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|_| {
                        decode_err(format!("tensor `{name}`: a uint8 value is out of range"))
                    })?,
            )
        }
        _ => {
            let ty = dt
                .map(|d| d.as_str_name().to_string())
                .unwrap_or_else(|| format!("#{}", t.data_type()));
            return Err(decode_err(format!(
                "tensor `{name}` has element type {ty}; Lithe reads FLOAT, DOUBLE, FLOAT16, INT8, UINT8, INT32 and INT64 tensors"
            )));
        }
    };
    Ok(Const { shape, data })
}

/// Encodes a float tensor as `raw_data` (little-endian).
pub(super) fn encode_f32(name: &str, t: &Tensor) -> TensorProto {
    let data = tensor::to_contiguous(t);
    let mut raw = Vec::with_capacity(data.len() * 4);
    for v in data.iter() {
        raw.extend_from_slice(&v.to_le_bytes());
    }
    TensorProto {
        name: Some(name.to_string()),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(raw),
        ..Default::default()
    }
}

/// The ONNX element type of a [`DType`].
pub(super) fn onnx_type(t: DType) -> DataType {
    match t {
        DType::F32 => DataType::Float,
        DType::I8 => DataType::Int8,
        DType::U8 => DataType::Uint8,
        DType::I32 => DataType::Int32,
        DType::I64 => DataType::Int64,
    }
}

/// The [`DType`] of an ONNX element type Lithe carries (`None` for the others).
pub(super) fn dtype_of(t: i32) -> Option<DType> {
    match DataType::try_from(t).ok()? {
        DataType::Float => Some(DType::F32),
        DataType::Int8 => Some(DType::I8),
        DataType::Uint8 => Some(DType::U8),
        DataType::Int32 => Some(DType::I32),
        _ => None,
    }
}

/// Encodes a tensor holding exact integers as an int8, uint8 or int32 `raw_data` tensor (any
/// other type is written as float).
pub(super) fn encode_typed(name: &str, t: &Tensor, dtype: DType) -> TensorProto {
    let data = tensor::to_contiguous(t);
    let mut raw = Vec::with_capacity(data.len() * 4);
    for &v in data.iter() {
        match dtype {
            DType::I8 => raw.push((v as i8) as u8),
            DType::U8 => raw.push(v as u8),
            DType::I32 => raw.extend_from_slice(&(v as i32).to_le_bytes()),
            _ => return encode_f32(name, t),
        }
    }
    TensorProto {
        name: Some(name.to_string()),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: Some(onnx_type(dtype) as i32),
        raw_data: Some(raw),
        ..Default::default()
    }
}

/// Encodes an int64 vector (a shape) as a 1-D `raw_data` tensor.
pub(super) fn encode_i64(name: &str, v: &[i64]) -> TensorProto {
    let mut raw = Vec::with_capacity(v.len() * 8);
    for x in v {
        raw.extend_from_slice(&x.to_le_bytes());
    }
    TensorProto {
        name: Some(name.to_string()),
        dims: vec![v.len() as i64],
        data_type: Some(DataType::Int64 as i32),
        raw_data: Some(raw),
        ..Default::default()
    }
}

/// Encodes a float scalar (rank 0).
pub(super) fn encode_scalar(name: &str, v: f32) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims: Vec::new(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(v.to_le_bytes().to_vec()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_floats() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn raw_length_must_match_dims() {
        let t = TensorProto {
            name: Some("w".into()),
            dims: vec![2, 3],
            data_type: Some(DataType::Float as i32),
            raw_data: Some(vec![0; 20]),
            ..Default::default()
        };
        let e = decode(t).unwrap_err();
        assert!(e.to_string().contains("raw_data has 20 bytes"), "{e}");
    }

    #[test]
    fn huge_dims_are_refused_before_allocation() {
        let t = TensorProto {
            name: Some("w".into()),
            dims: vec![1 << 40, 1 << 40],
            data_type: Some(DataType::Float as i32),
            ..Default::default()
        };
        assert!(matches!(decode(t), Err(Error::Limit { .. })));
    }
}

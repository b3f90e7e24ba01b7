//! The closed set of operators the engine understands.

use crate::tensor::DType;
use serde::{Deserialize, Serialize};

/// Padding policy of a convolution or pooling window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum AutoPad {
    /// Explicit `pads` are used.
    #[default]
    NotSet,
    /// Output size = ceil(input / stride); extra padding goes at the end.
    SameUpper,
    /// Output size = ceil(input / stride); extra padding goes at the start.
    SameLower,
    /// No padding.
    Valid,
}

/// Attributes of a 2-D convolution (`Conv`, NCHW, weights `[M, C/groups, kh, kw]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConvAttrs {
    /// Window height and width (taken from the weight when the file omits it).
    pub kernel: [usize; 2],
    /// Vertical and horizontal stride.
    pub strides: [usize; 2],
    /// Padding `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    /// Vertical and horizontal dilation.
    pub dilations: [usize; 2],
    /// Number of groups; `groups == channels` is a depthwise convolution.
    pub groups: usize,
    /// Automatic padding rule.
    pub auto_pad: AutoPad,
}

impl ConvAttrs {
    /// A plain convolution with the given kernel, stride 1, no padding.
    pub fn new(kernel: [usize; 2]) -> Self {
        ConvAttrs {
            kernel,
            strides: [1, 1],
            pads: [0; 4],
            dilations: [1, 1],
            groups: 1,
            auto_pad: AutoPad::NotSet,
        }
    }
}

/// Attributes of a max or average pooling window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolAttrs {
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Vertical and horizontal stride.
    pub strides: [usize; 2],
    /// Padding `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    /// Vertical and horizontal dilation (max pooling only).
    pub dilations: [usize; 2],
    /// Round the output size up instead of down.
    pub ceil_mode: bool,
    /// Average pooling: divide by the full window including padding.
    pub count_include_pad: bool,
    /// Automatic padding rule.
    pub auto_pad: AutoPad,
}

impl PoolAttrs {
    /// A `k×k` window with stride `k` and no padding.
    pub fn square(k: usize) -> Self {
        PoolAttrs {
            kernel: [k, k],
            strides: [k, k],
            pads: [0; 4],
            dilations: [1, 1],
            ceil_mode: false,
            count_include_pad: false,
            auto_pad: AutoPad::NotSet,
        }
    }
}

/// How `Pad` fills the border.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum PadMode {
    /// A constant value.
    #[default]
    Constant,
    /// Mirror without repeating the edge (`[1, 2, 3] → 3 2 | 1 2 3 | 2 1`).
    Reflect,
    /// Repeat the edge value.
    Edge,
    /// Wrap around (opset 19).
    Wrap,
}

impl PadMode {
    /// The mode as ONNX spells it.
    pub fn name(self) -> &'static str {
        match self {
            PadMode::Constant => "constant",
            PadMode::Reflect => "reflect",
            PadMode::Edge => "edge",
            PadMode::Wrap => "wrap",
        }
    }
}

/// Attributes of `Pad`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PadAttrs {
    /// Padding in ONNX order: all begins, then all ends, one pair per entry of `axes`.
    pub pads: Vec<usize>,
    /// Padded axes (negative counts from the end); empty means every axis in order.
    pub axes: Vec<i64>,
    /// Border rule.
    pub mode: PadMode,
    /// Fill value of [`PadMode::Constant`].
    pub value: f32,
}

/// Attributes of `Gemm`: `Y = alpha·op(A)·op(B) + beta·C`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GemmAttrs {
    /// Scale of the product.
    pub alpha: f32,
    /// Scale of the bias `C`.
    pub beta: f32,
    /// Transpose `A` first.
    pub trans_a: bool,
    /// Transpose `B` first (PyTorch `Linear` exports `trans_b = true`).
    pub trans_b: bool,
}

impl Default for GemmAttrs {
    fn default() -> Self {
        GemmAttrs {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: false,
        }
    }
}

/// An operator with its attributes. Inputs are named in [`crate::graph::Node::inputs`] in ONNX
/// order; optional inputs may be absent (empty name) where noted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Op {
    /// Dense layer `Y = alpha·op(A)·op(B) + beta·C`; inputs `[A, B, C?]`.
    Gemm(GemmAttrs),
    /// Matrix product with numpy batching rules; inputs `[A, B]`.
    MatMul,
    /// 2-D convolution; inputs `[X, W, B?]`.
    Conv(ConvAttrs),
    /// 2-D max pooling.
    MaxPool(PoolAttrs),
    /// 2-D average pooling.
    AvgPool(PoolAttrs),
    /// Mean over all spatial positions: `[N, C, H, W] → [N, C, 1, 1]`.
    GlobalAvgPool,
    /// Batch normalisation; inputs `[X, scale, bias, mean, var]`. Inference uses the running
    /// statistics; training uses batch statistics and updates the running ones with `momentum`.
    BatchNorm {
        /// Added to the variance before the square root.
        epsilon: f32,
        /// ONNX momentum: `running = running·momentum + batch·(1 − momentum)`.
        momentum: f32,
    },
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, min), max)`; ReLU6 is `Clip { min: 0, max: 6 }`.
    Clip {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
    /// Logistic sigmoid.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// Softmax along `axis`.
    Softmax {
        /// Axis (negative counts from the end).
        axis: i64,
        /// Opset < 13 semantics: flatten to 2-D at `axis` and normalise each row.
        coerce_2d: bool,
    },
    /// Log-softmax along `axis`.
    LogSoftmax {
        /// Axis (negative counts from the end).
        axis: i64,
        /// Opset < 13 semantics, as for [`Op::Softmax`].
        coerce_2d: bool,
    },
    /// Flattens to 2-D: dims before `axis` make the rows.
    Flatten {
        /// Split point.
        axis: i64,
    },
    /// Reshape to a static target; `0` copies the input dim, `-1` is inferred.
    Reshape {
        /// Target shape.
        shape: Vec<i64>,
    },
    /// Elementwise sum with broadcasting (residual connections).
    Add,
    /// Concatenation along `axis`.
    Concat {
        /// Axis (negative counts from the end).
        axis: i64,
    },
    /// Inverted dropout, active only while training.
    Dropout {
        /// Probability of dropping a unit.
        ratio: f32,
    },
    /// `x` for `x ≥ 0`, `alpha·x` otherwise.
    LeakyRelu {
        /// Slope of the negative part.
        alpha: f32,
    },
    /// `clamp(alpha·x + beta, 0, 1)`.
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// `x · clamp(x/6 + 1/2, 0, 1)`.
    HardSwish,
    /// `sign(x)`: −1, 0 or +1 (ONNX `Sign`). Training differentiates it with the
    /// straight-through estimator of binarized networks (Hubara et al. 2016): the gradient
    /// passes where `|x| ≤ 1` and is 0 elsewhere.
    Sign,
    /// Rounds to the nearest integer, halves to even (ONNX `Round`). Training passes the
    /// gradient straight through (identity), as quantization-aware training needs.
    Round,
    /// Gaussian error linear unit `x·Φ(x)`.
    Gelu {
        /// Use the tanh approximation (`approximate = "tanh"`).
        tanh: bool,
    },
    /// Elementwise product with broadcasting.
    Mul,
    /// Elementwise difference with broadcasting.
    Sub,
    /// Elementwise quotient with broadcasting (IEEE: `x/0` is ±inf or NaN).
    Div,
    /// Permutes the axes.
    Transpose {
        /// `perm[i]` is the input axis that becomes output axis `i`; empty reverses the axes.
        perm: Vec<usize>,
    },
    /// Removes size-1 axes.
    Squeeze {
        /// Axes to remove (negative counts from the end); empty removes every size-1 axis.
        axes: Vec<i64>,
    },
    /// Inserts size-1 axes.
    Unsqueeze {
        /// Positions of the new axes in the output (negative counts from the end).
        axes: Vec<i64>,
    },
    /// Maximum over all spatial positions: `[N, C, H, W] → [N, C, 1, 1]`.
    GlobalMaxPool,
    /// Pads a tensor (any rank).
    Pad(PadAttrs),
    /// Layer normalisation over the axes from `axis` on; inputs `[X, scale, bias?]`. Optional
    /// outputs `[Y, mean, inv_std_dev]`.
    LayerNorm {
        /// First normalised axis (negative counts from the end).
        axis: i64,
        /// Added to the variance before the square root.
        epsilon: f32,
    },
    /// `y = saturate(round_half_even(x / scale) + zero_point)`; inputs `[x, scale,
    /// zero_point?]`, per-tensor (scalar scale) or per-axis (1-D scale along `axis`).
    QuantizeLinear {
        /// Quantization axis of a 1-D scale (negative counts from the end).
        axis: i64,
        /// Output type ([`DType::I8`] or [`DType::U8`]); also the zero point's type.
        to: DType,
    },
    /// `y = (x − zero_point) · scale`; inputs `[x, scale, zero_point?]`, per-tensor or per-axis.
    DequantizeLinear {
        /// Quantization axis of a 1-D scale (negative counts from the end).
        axis: i64,
        /// Type of `x` and the zero point ([`DType::I8`], [`DType::U8`] or [`DType::I32`]).
        from: DType,
    },
    /// uint8 quantization with a scale and zero point computed from the input's range; outputs
    /// `[y (uint8), scale, zero_point (uint8)]`.
    DynamicQuantizeLinear,
    /// Quantized convolution; inputs `[x, x_scale, x_zero_point, w, w_scale, w_zero_point,
    /// y_scale, y_zero_point, B? (int32)]`; the int32 accumulator is requantized to `y`.
    QLinearConv {
        /// Window attributes (as for [`Op::Conv`]).
        conv: ConvAttrs,
        /// Type of `x` and its zero point.
        x: DType,
        /// Type of `w` and its zero point(s).
        w: DType,
        /// Type of `y` and its zero point.
        y: DType,
    },
    /// Quantized matrix product; inputs `[a, a_scale, a_zero_point, b, b_scale, b_zero_point,
    /// y_scale, y_zero_point]`.
    QLinearMatMul {
        /// Type of `a` and its zero point.
        a: DType,
        /// Type of `b` and its zero point.
        b: DType,
        /// Type of `y` and its zero point.
        y: DType,
    },
    /// Integer matrix product with int32 output; inputs `[A, B, a_zero_point?, b_zero_point?]`.
    MatMulInteger {
        /// Type of `A` and its zero point.
        a: DType,
        /// Type of `B` and its zero point.
        b: DType,
    },
    /// Integer convolution with int32 output; inputs `[x, w, x_zero_point?, w_zero_point?]`.
    ConvInteger {
        /// Window attributes (as for [`Op::Conv`]).
        conv: ConvAttrs,
        /// Type of `x` and its zero point.
        x: DType,
        /// Type of `w` and its zero point(s).
        w: DType,
    },
    /// Element type conversion between float, int8, uint8 and int32.
    Cast {
        /// Input type.
        from: DType,
        /// Output type.
        to: DType,
    },
}

impl Op {
    /// The operator's name as ONNX spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Gemm(_) => "Gemm",
            Op::MatMul => "MatMul",
            Op::Conv(_) => "Conv",
            Op::MaxPool(_) => "MaxPool",
            Op::AvgPool(_) => "AveragePool",
            Op::GlobalAvgPool => "GlobalAveragePool",
            Op::BatchNorm { .. } => "BatchNormalization",
            Op::Relu => "Relu",
            Op::Clip { .. } => "Clip",
            Op::Sigmoid => "Sigmoid",
            Op::Tanh => "Tanh",
            Op::Softmax { .. } => "Softmax",
            Op::LogSoftmax { .. } => "LogSoftmax",
            Op::Flatten { .. } => "Flatten",
            Op::Reshape { .. } => "Reshape",
            Op::Add => "Add",
            Op::Concat { .. } => "Concat",
            Op::Dropout { .. } => "Dropout",
            Op::LeakyRelu { .. } => "LeakyRelu",
            Op::HardSigmoid { .. } => "HardSigmoid",
            Op::HardSwish => "HardSwish",
            Op::Sign => "Sign",
            Op::Round => "Round",
            Op::Gelu { .. } => "Gelu",
            Op::Mul => "Mul",
            Op::Sub => "Sub",
            Op::Div => "Div",
            Op::Transpose { .. } => "Transpose",
            Op::Squeeze { .. } => "Squeeze",
            Op::Unsqueeze { .. } => "Unsqueeze",
            Op::GlobalMaxPool => "GlobalMaxPool",
            Op::Pad(_) => "Pad",
            Op::LayerNorm { .. } => "LayerNormalization",
            Op::QuantizeLinear { .. } => "QuantizeLinear",
            Op::DequantizeLinear { .. } => "DequantizeLinear",
            Op::DynamicQuantizeLinear => "DynamicQuantizeLinear",
            Op::QLinearConv { .. } => "QLinearConv",
            Op::QLinearMatMul { .. } => "QLinearMatMul",
            Op::MatMulInteger { .. } => "MatMulInteger",
            Op::ConvInteger { .. } => "ConvInteger",
            Op::Cast { .. } => "Cast",
        }
    }

    /// Whether the op is one of the integer/quantization ops (no training through them).
    pub fn is_quant(&self) -> bool {
        matches!(
            self,
            Op::QuantizeLinear { .. }
                | Op::DequantizeLinear { .. }
                | Op::DynamicQuantizeLinear
                | Op::QLinearConv { .. }
                | Op::QLinearMatMul { .. }
                | Op::MatMulInteger { .. }
                | Op::ConvInteger { .. }
                | Op::Cast { .. }
        )
    }

    /// The element type the op expects for input `i` (integer values are carried as exact
    /// integers in `f32` tensors; see [`crate::tensor::F32_EXACT_INT`]).
    pub fn input_dtype(&self, i: usize) -> DType {
        match self {
            Op::QuantizeLinear { to, .. } if i == 2 => *to,
            Op::DequantizeLinear { from, .. } if i == 0 || i == 2 => *from,
            Op::QLinearConv { x, w, y, .. } => match i {
                0 | 2 => *x,
                3 | 5 => *w,
                7 => *y,
                8 => DType::I32,
                _ => DType::F32,
            },
            Op::QLinearMatMul { a, b, y } => match i {
                0 | 2 => *a,
                3 | 5 => *b,
                7 => *y,
                _ => DType::F32,
            },
            Op::MatMulInteger { a: x, b: w } | Op::ConvInteger { x, w, .. } => {
                if i.is_multiple_of(2) { *x } else { *w }
            }
            Op::Cast { from, .. } => *from,
            _ => DType::F32,
        }
    }

    /// The element type of output `k`.
    pub fn output_dtype(&self, k: usize) -> DType {
        match self {
            Op::QuantizeLinear { to, .. } | Op::Cast { to, .. } => *to,
            Op::DynamicQuantizeLinear if k != 1 => DType::U8,
            Op::QLinearConv { y, .. } | Op::QLinearMatMul { y, .. } => *y,
            Op::MatMulInteger { .. } | Op::ConvInteger { .. } => DType::I32,
            _ => DType::F32,
        }
    }

    /// Indices of inputs that are trainable parameters when they are weights (not activations).
    pub fn param_inputs(&self) -> &'static [usize] {
        match self {
            Op::Gemm(_) | Op::Conv(_) => &[1, 2],
            Op::MatMul => &[1],
            Op::BatchNorm { .. } | Op::LayerNorm { .. } => &[1, 2],
            _ => &[],
        }
    }

    /// Minimum and maximum number of inputs.
    pub fn arity(&self) -> (usize, usize) {
        match self {
            Op::Gemm(_) | Op::Conv(_) => (2, 3),
            Op::MatMul | Op::Add | Op::Mul | Op::Sub | Op::Div => (2, 2),
            Op::LayerNorm { .. } => (2, 3),
            Op::BatchNorm { .. } => (5, 5),
            Op::QuantizeLinear { .. } | Op::DequantizeLinear { .. } => (2, 3),
            Op::QLinearConv { .. } => (8, 9),
            Op::QLinearMatMul { .. } => (8, 8),
            Op::MatMulInteger { .. } | Op::ConvInteger { .. } => (2, 4),
            Op::Concat { .. } => (1, usize::MAX),
            _ => (1, 1),
        }
    }

    /// Most outputs the op computes (the first is the one training differentiates).
    pub fn max_outputs(&self) -> usize {
        match self {
            Op::LayerNorm { .. } | Op::DynamicQuantizeLinear => 3,
            _ => 1,
        }
    }
}

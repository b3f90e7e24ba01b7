//! The op registry: one small builder per ONNX op type, turning a `NodeProto` (with its
//! opset-specific attribute forms) into a graph [`Op`], a constant, or an alias.

use super::LIMITS;
use super::proto::attribute_proto::AttributeType;
use super::proto::{AttributeProto, NodeProto, TensorProto};
use super::tensor::{self, Const, Data};
use crate::graph::{AutoPad, ConvAttrs, GemmAttrs, Op, PadAttrs, PadMode, PoolAttrs};
use crate::tensor::DType;
use crate::{Error, Result};
use std::collections::HashMap;

/// What a builder sees: the node, its opset and the constants known so far.
pub(super) struct NodeCtx<'a> {
    /// The node as stored in the file.
    pub proto: &'a NodeProto,
    /// The node's (unique) name in the graph being built.
    pub name: &'a str,
    /// The op type, as registered.
    pub op_type: &'static str,
    /// The default-domain opset of the model.
    pub opset: i64,
    /// Input value names after `Identity` folding; an empty string is an absent input.
    pub inputs: &'a [String],
    /// Constants: initializers, `Constant` outputs and folded values.
    pub consts: &'a HashMap<String, Const>,
    /// Integer constants folded from `Shape` with batch-dependent elements.
    pub sym: &'a HashMap<String, SymDims>,
    /// Value shapes known so far, with symbolic dims set to 1 and to 2.
    pub shapes: &'a [HashMap<String, Vec<usize>>; 2],
    /// Element types of the graph inputs and node outputs built so far.
    pub dtypes: &'a HashMap<String, DType>,
}

/// For each element of an integer constant folded from `Shape`: `Some((value, dim))` when it
/// stands for dim `dim` of `value`, which changes with the batch size (the constant holds its
/// value at batch size 1); `None` when it is static.
pub(super) type SymDims = Vec<Option<(String, usize)>>;

/// What a builder makes of a node.
pub(super) enum Built {
    /// A graph node reading `inputs`; it produces the proto's first output.
    Op {
        /// The operator.
        op: Op,
        /// Data inputs (inputs folded into attributes are left out).
        inputs: Vec<String>,
    },
    /// The first output is a constant (Constant, or a Reshape/Flatten of a constant).
    Const(Const),
    /// The first output is another name for this value (Identity).
    Alias(String),
    /// The first output is an integer constant some of whose elements are batch-dependent dims
    /// (a folded `Shape`, or a Gather/Unsqueeze/Squeeze/Concat of one).
    SymConst(Const, SymDims),
}

/// A per-op builder.
pub(super) type Builder = fn(&NodeCtx<'_>) -> Result<Built>;

/// The registry, one entry per supported ONNX op type.
const REGISTRY: [(&str, Builder); 45] = [
    ("Gemm", gemm),
    ("MatMul", matmul),
    ("Conv", conv),
    ("MaxPool", max_pool),
    ("AveragePool", average_pool),
    ("GlobalAveragePool", global_average_pool),
    ("BatchNormalization", batch_normalization),
    ("Relu", relu),
    ("Clip", clip),
    ("Sigmoid", sigmoid),
    ("Tanh", tanh),
    ("Softmax", softmax),
    ("LogSoftmax", log_softmax),
    ("Flatten", flatten),
    ("Reshape", reshape),
    ("Add", add),
    ("Concat", concat),
    ("Dropout", dropout),
    ("Constant", constant),
    ("Identity", identity),
    ("LeakyRelu", leaky_relu),
    ("HardSigmoid", hard_sigmoid),
    ("HardSwish", hard_swish),
    ("Sign", sign),
    ("Round", round),
    ("Gelu", gelu),
    ("Mul", mul),
    ("Sub", sub),
    ("Div", div),
    ("Transpose", transpose),
    ("Squeeze", squeeze),
    ("Unsqueeze", unsqueeze),
    ("GlobalMaxPool", global_max_pool),
    ("Pad", pad),
    ("LayerNormalization", layer_normalization),
    ("Shape", shape),
    ("Gather", gather),
    ("QuantizeLinear", quantize_linear),
    ("DequantizeLinear", dequantize_linear),
    ("DynamicQuantizeLinear", dynamic_quantize_linear),
    ("QLinearConv", qlinear_conv),
    ("QLinearMatMul", qlinear_matmul),
    ("MatMulInteger", matmul_integer),
    ("ConvInteger", conv_integer),
    ("Cast", cast),
];

const fn names<const N: usize>(r: &[(&'static str, Builder); N]) -> [&'static str; N] {
    let mut out = [""; N];
    let mut i = 0;
    while i < N {
        out[i] = r[i].0;
        i += 1;
    }
    out
}

/// The registered op types, in registry order.
pub(super) const OP_TYPES: [&str; REGISTRY.len()] = names(&REGISTRY);

/// The builder registered for a default-domain op type.
pub(super) fn lookup(op_type: &str) -> Option<(&'static str, Builder)> {
    REGISTRY.iter().find(|(name, _)| *name == op_type).copied()
}

// ---------------------------------------------------------------------------------------------
// Attribute and input access.

impl NodeCtx<'_> {
    /// An attribute error on this node.
    pub fn bad(&self, attr: &'static str, detail: impl Into<String>) -> Error {
        Error::Attribute {
            node: self.name.to_string(),
            op: self.op_type,
            attr,
            detail: detail.into(),
        }
    }

    fn attr(&self, name: &'static str, want: AttributeType) -> Result<Option<&AttributeProto>> {
        let mut found = self.proto.attribute.iter().filter(|a| a.name() == name);
        let Some(a) = found.next() else {
            return Ok(None);
        };
        let repeats = found.count();
        if repeats > 0 {
            return Err(self.bad(
                name,
                format!(
                    "appears {} times; attribute names must be unique within a node",
                    repeats + 1
                ),
            ));
        }
        match a.r#type {
            None | Some(0) => Ok(Some(a)),
            Some(t) if t == want as i32 => Ok(Some(a)),
            Some(t) => {
                let got = AttributeType::try_from(t)
                    .map(|t| t.as_str_name())
                    .unwrap_or("unknown");
                Err(self.bad(
                    name,
                    format!("expected {} but the file has {got}", want.as_str_name()),
                ))
            }
        }
    }

    /// An integer attribute.
    pub fn int(&self, name: &'static str) -> Result<Option<i64>> {
        match self.attr(name, AttributeType::Int)? {
            None => Ok(None),
            Some(a) => {
                a.i.map(Some)
                    .ok_or_else(|| self.bad(name, "has no integer value"))
            }
        }
    }

    /// A float attribute.
    pub fn float(&self, name: &'static str) -> Result<Option<f32>> {
        match self.attr(name, AttributeType::Float)? {
            None => Ok(None),
            Some(a) => {
                a.f.map(Some)
                    .ok_or_else(|| self.bad(name, "has no float value"))
            }
        }
    }

    /// A list-of-integers attribute.
    pub fn ints(&self, name: &'static str) -> Result<Option<&[i64]>> {
        Ok(self
            .attr(name, AttributeType::Ints)?
            .map(|a| a.ints.as_slice()))
    }

    /// A list-of-floats attribute.
    pub fn floats(&self, name: &'static str) -> Result<Option<&[f32]>> {
        Ok(self
            .attr(name, AttributeType::Floats)?
            .map(|a| a.floats.as_slice()))
    }

    /// A string attribute (UTF-8).
    pub fn string(&self, name: &'static str) -> Result<Option<&str>> {
        match self.attr(name, AttributeType::String)? {
            None => Ok(None),
            Some(a) => std::str::from_utf8(a.s())
                .map(Some)
                .map_err(|_| self.bad(name, "is not valid UTF-8")),
        }
    }

    /// A tensor attribute.
    pub fn tensor(&self, name: &'static str) -> Result<Option<&TensorProto>> {
        match self.attr(name, AttributeType::Tensor)? {
            None => Ok(None),
            Some(a) => {
                a.t.as_ref()
                    .map(Some)
                    .ok_or_else(|| self.bad(name, "has no tensor value"))
            }
        }
    }

    /// Input `i` when present (not absent and not the empty name).
    pub fn input(&self, i: usize) -> Option<&str> {
        self.inputs
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// Input `i`, which the op requires.
    pub fn required(&self, i: usize) -> Result<String> {
        self.input(i).map(str::to_string).ok_or_else(|| {
            Error::Graph(format!(
                "node `{}` ({}) lacks its required input #{i}",
                self.name, self.op_type
            ))
        })
    }

    /// Input `i` as a constant: `None` when absent, an error when present but computed at run
    /// time (`what` names the input in the message).
    pub fn const_input(&self, i: usize, what: &'static str) -> Result<Option<&Const>> {
        let Some(name) = self.input(i) else {
            return Ok(None);
        };
        if self.sym.contains_key(name) {
            return Err(self.bad(
                what,
                format!(
                    "input `{name}` depends on the batch size; Lithe folds such shapes only into \
                     the target of a Reshape"
                ),
            ));
        }
        self.consts.get(name).map(Some).ok_or_else(|| {
            self.bad(
                what,
                format!(
                    "input `{name}` must be a constant (an initializer or a Constant node); Lithe does not \
                     compute it at run time"
                ),
            )
        })
    }

    /// The node's inputs with trailing absent ones removed.
    pub fn all_inputs(&self) -> Vec<String> {
        let keep = self
            .inputs
            .iter()
            .rposition(|s| !s.is_empty())
            .map_or(0, |i| i + 1);
        self.inputs.iter().take(keep).cloned().collect()
    }

    /// A node with all its inputs.
    fn op(&self, op: Op) -> Result<Built> {
        Ok(Built::Op {
            op,
            inputs: self.all_inputs(),
        })
    }

    /// A node reading only its first input (the others were folded into attributes).
    fn op_on_first(&self, op: Op) -> Result<Built> {
        Ok(Built::Op {
            op,
            inputs: vec![self.required(0)?],
        })
    }
}

fn to_usize(c: &NodeCtx<'_>, attr: &'static str, v: i64, lo: usize, hi: usize) -> Result<usize> {
    usize::try_from(v)
        .ok()
        .filter(|x| (lo..=hi).contains(x))
        .ok_or_else(|| c.bad(attr, format!("value {v} is outside {lo}..={hi}")))
}

/// A list attribute of exactly `N` integers in `lo..=hi`, or `default`.
fn fixed_ints<const N: usize>(
    c: &NodeCtx<'_>,
    attr: &'static str,
    lo: usize,
    default: [usize; N],
) -> Result<[usize; N]> {
    let Some(v) = c.ints(attr)? else {
        return Ok(default);
    };
    if v.len() != N {
        return Err(c.bad(
            attr,
            format!(
                "has {} values; Lithe supports 2-D windows only ({N} values)",
                v.len()
            ),
        ));
    }
    let mut out = default;
    for (o, &x) in out.iter_mut().zip(v) {
        *o = to_usize(c, attr, x, lo, LIMITS.max_window)?;
    }
    Ok(out)
}

fn auto_pad(c: &NodeCtx<'_>) -> Result<AutoPad> {
    match c.string("auto_pad")?.unwrap_or("NOTSET") {
        "NOTSET" | "" => Ok(AutoPad::NotSet),
        "SAME_UPPER" => Ok(AutoPad::SameUpper),
        "SAME_LOWER" => Ok(AutoPad::SameLower),
        "VALID" => Ok(AutoPad::Valid),
        other => Err(c.bad("auto_pad", format!("unknown value `{other}`"))),
    }
}

/// The window attributes shared by Conv and the pools: kernel (if given), strides, pads,
/// dilations, auto_pad.
struct Window {
    kernel: Option<[usize; 2]>,
    strides: [usize; 2],
    pads: [usize; 4],
    dilations: [usize; 2],
    auto_pad: AutoPad,
}

fn window(c: &NodeCtx<'_>) -> Result<Window> {
    let kernel = match c.ints("kernel_shape")? {
        None => None,
        Some(_) => Some(fixed_ints(c, "kernel_shape", 1, [1, 1])?),
    };
    Ok(Window {
        kernel,
        strides: fixed_ints(c, "strides", 1, [1, 1])?,
        pads: fixed_ints(c, "pads", 0, [0; 4])?,
        dilations: fixed_ints(c, "dilations", 1, [1, 1])?,
        auto_pad: auto_pad(c)?,
    })
}

fn flag(c: &NodeCtx<'_>, attr: &'static str) -> Result<bool> {
    match c.int(attr)? {
        None | Some(0) => Ok(false),
        Some(1) => Ok(true),
        Some(v) => Err(c.bad(attr, format!("must be 0 or 1, got {v}"))),
    }
}

/// Softmax/LogSoftmax axis: default 1 with 2-D coercion before opset 13, default -1 after.
fn softmax_axis(c: &NodeCtx<'_>) -> Result<(i64, bool)> {
    let legacy = c.opset < 13;
    let axis = c.int("axis")?.unwrap_or(if legacy { 1 } else { -1 });
    if axis.unsigned_abs() > LIMITS.max_rank as u64 {
        return Err(c.bad("axis", format!("{axis} is out of range")));
    }
    Ok((axis, legacy))
}

fn axis_attr(c: &NodeCtx<'_>, default: Option<i64>) -> Result<i64> {
    let axis = match (c.int("axis")?, default) {
        (Some(a), _) => a,
        (None, Some(d)) => d,
        (None, None) => return Err(c.bad("axis", "is required")),
    };
    if axis.unsigned_abs() > LIMITS.max_rank as u64 {
        return Err(c.bad("axis", format!("{axis} is out of range")));
    }
    Ok(axis)
}

/// Checks a Reshape target: entries ≥ -1, at most one -1, element count within limits.
fn check_reshape_target(c: &NodeCtx<'_>, target: &[i64], allow_zero: bool) -> Result<()> {
    if target.len() > LIMITS.max_rank {
        return Err(c.bad(
            "shape",
            format!("rank {} exceeds {}", target.len(), LIMITS.max_rank),
        ));
    }
    if target.iter().filter(|&&t| t == -1).count() > 1 || target.iter().any(|&t| t < -1) {
        return Err(c.bad("shape", format!("invalid target {target:?}")));
    }
    if allow_zero && target.contains(&0) {
        return Err(c.bad(
            "allowzero",
            "allowzero=1 with a 0 in the shape (an empty tensor) is not supported",
        ));
    }
    let mut known: u64 = 1;
    for &t in target.iter().filter(|&&t| t > 0) {
        known = known.saturating_mul(t as u64);
    }
    if known > LIMITS.max_tensor_elements as u64 {
        return Err(Error::Limit {
            what: "Reshape target",
            got: known,
            limit: LIMITS.max_tensor_elements as u64,
        });
    }
    Ok(())
}

/// The concrete shape a Reshape target gives for a known input shape (`0` copies, `-1` infers).
fn resolve_reshape(
    c: &NodeCtx<'_>,
    target: &[i64],
    input: &[usize],
    total: usize,
) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            -1 => {
                infer = Some(i);
                out.push(1);
            }
            0 => out.push(*input.get(i).ok_or_else(|| {
                c.bad(
                    "shape",
                    format!("0 at position {i} copies a dim the input {input:?} lacks"),
                )
            })?),
            t => out.push(
                usize::try_from(t)
                    .map_err(|_| c.bad("shape", format!("invalid target {target:?}")))?,
            ),
        }
    }
    let known = crate::tensor::checked_numel(&out)?;
    match infer {
        Some(i) if known != 0 && total.is_multiple_of(known) => {
            if let Some(o) = out.get_mut(i) {
                *o = total / known;
            }
        }
        None if known == total => {}
        _ => return Err(c.bad("shape", format!("cannot reshape {input:?} to {target:?}"))),
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The builders, one per op type.

fn gemm(c: &NodeCtx<'_>) -> Result<Built> {
    c.op(Op::Gemm(GemmAttrs {
        alpha: c.float("alpha")?.unwrap_or(1.0),
        beta: c.float("beta")?.unwrap_or(1.0),
        trans_a: flag(c, "transA")?,
        trans_b: flag(c, "transB")?,
    }))
}

fn matmul(c: &NodeCtx<'_>) -> Result<Built> {
    c.op(Op::MatMul)
}

fn conv(c: &NodeCtx<'_>) -> Result<Built> {
    let w = window(c)?;
    let weight = c.input(1).and_then(|n| c.consts.get(n));
    if let Some(wt) = weight
        && wt.shape.len() != 4
    {
        return Err(c.bad(
            "kernel_shape",
            format!(
                "weight has shape {:?}; Lithe supports 2-D convolutions only",
                wt.shape
            ),
        ));
    }
    let kernel = match (w.kernel, weight) {
        (Some(k), _) => k,
        (None, Some(wt)) => match wt.shape.as_slice() {
            [_, _, kh, kw] => [*kh, *kw],
            _ => return Err(c.bad("kernel_shape", "cannot be taken from the weight")),
        },
        (None, None) => {
            return Err(c.bad("kernel_shape", "is absent and the weight is not a constant"));
        }
    };
    let groups = match c.int("group")? {
        None => 1,
        Some(g) => to_usize(c, "group", g, 1, LIMITS.max_tensor_elements)?,
    };
    c.op(Op::Conv(ConvAttrs {
        kernel,
        strides: w.strides,
        pads: w.pads,
        dilations: w.dilations,
        groups,
        auto_pad: w.auto_pad,
    }))
}

fn pool_attrs(c: &NodeCtx<'_>) -> Result<PoolAttrs> {
    let w = window(c)?;
    let kernel = w
        .kernel
        .ok_or_else(|| c.bad("kernel_shape", "is required"))?;
    Ok(PoolAttrs {
        kernel,
        strides: w.strides,
        pads: w.pads,
        dilations: w.dilations,
        ceil_mode: flag(c, "ceil_mode")?,
        count_include_pad: false,
        auto_pad: w.auto_pad,
    })
}

fn max_pool(c: &NodeCtx<'_>) -> Result<Built> {
    if c.int("storage_order")?.unwrap_or(0) != 0 {
        return Err(c.bad("storage_order", "only row-major (0) is supported"));
    }
    let a = pool_attrs(c)?;
    c.op_on_first(Op::MaxPool(a))
}

fn average_pool(c: &NodeCtx<'_>) -> Result<Built> {
    let mut a = pool_attrs(c)?;
    if a.dilations != [1, 1] {
        return Err(c.bad("dilations", "dilated average pooling is not supported"));
    }
    a.count_include_pad = flag(c, "count_include_pad")?;
    c.op_on_first(Op::AvgPool(a))
}

fn global_average_pool(c: &NodeCtx<'_>) -> Result<Built> {
    c.op(Op::GlobalAvgPool)
}

fn batch_normalization(c: &NodeCtx<'_>) -> Result<Built> {
    if c.opset < 9 && c.int("spatial")?.unwrap_or(1) != 1 {
        return Err(c.bad(
            "spatial",
            "per-activation statistics (spatial=0) are not supported",
        ));
    }
    if c.int("training_mode")?.unwrap_or(0) != 0 {
        return Err(c.bad(
            "training_mode",
            "a model that normalises with batch statistics at inference is not supported",
        ));
    }
    let epsilon = c.float("epsilon")?.unwrap_or(1e-5);
    let momentum = c.float("momentum")?.unwrap_or(0.9);
    if !(epsilon.is_finite() && epsilon >= 0.0) {
        return Err(c.bad("epsilon", format!("{epsilon} is not a non-negative number")));
    }
    c.op(Op::BatchNorm { epsilon, momentum })
}

fn relu(c: &NodeCtx<'_>) -> Result<Built> {
    c.op(Op::Relu)
}

fn clip(c: &NodeCtx<'_>) -> Result<Built> {
    let (min, max) = if c.opset < 11 {
        (
            c.float("min")?.unwrap_or(f32::NEG_INFINITY),
            c.float("max")?.unwrap_or(f32::INFINITY),
        )
    } else {
        let bound = |i: usize, what: &'static str, default: f32| -> Result<f32> {
            match c.const_input(i, what)? {
                None => Ok(default),
                Some(k) => k.scalar_f32().ok_or_else(|| {
                    c.bad(what, format!("must be a scalar, has shape {:?}", k.shape))
                }),
            }
        };
        (
            bound(1, "min", f32::NEG_INFINITY)?,
            bound(2, "max", f32::INFINITY)?,
        )
    };
    if min.is_nan() || max.is_nan() {
        return Err(c.bad("min/max", "bounds must not be NaN"));
    }
    c.op_on_first(Op::Clip { min, max })
}

fn sigmoid(c: &NodeCtx<'_>) -> Result<Built> {
    c.op(Op::Sigmoid)
}

fn tanh(c: &NodeCtx<'_>) -> Result<Built> {
    c.op(Op::Tanh)
}

fn softmax(c: &NodeCtx<'_>) -> Result<Built> {
    let (axis, coerce_2d) = softmax_axis(c)?;
    c.op(Op::Softmax { axis, coerce_2d })
}

fn log_softmax(c: &NodeCtx<'_>) -> Result<Built> {
    let (axis, coerce_2d) = softmax_axis(c)?;
    c.op(Op::LogSoftmax { axis, coerce_2d })
}

fn flatten(c: &NodeCtx<'_>) -> Result<Built> {
    let axis = axis_attr(c, Some(1))?;
    let x = c.required(0)?;
    if let Some(k) = c.consts.get(&x) {
        let r = k.shape.len() as i64;
        let a = if axis < 0 { axis + r } else { axis };
        let a = usize::try_from(a)
            .ok()
            .filter(|&a| a <= k.shape.len())
            .ok_or_else(|| c.bad("axis", format!("{axis} is out of range for rank {r}")))?;
        let (head, tail) = k.shape.split_at(a);
        let shape = vec![
            crate::tensor::checked_numel(head)?,
            crate::tensor::checked_numel(tail)?,
        ];
        return Ok(Built::Const(Const {
            shape,
            data: k.data.clone(),
        }));
    }
    c.op_on_first(Op::Flatten { axis })
}

fn reshape(c: &NodeCtx<'_>) -> Result<Built> {
    if let Some(b) = reshape_symbolic(c)? {
        return Ok(b);
    }
    let k = c.const_input(1, "shape")?.ok_or_else(|| {
        Error::Graph(format!("node `{}` (Reshape) lacks its shape input", c.name))
    })?;
    let target = k
        .ints()
        .ok_or_else(|| c.bad("shape", "the shape input must be an int64 tensor"))?;
    if k.shape.len() > 1 {
        return Err(c.bad(
            "shape",
            format!("the shape input must be 1-D, has shape {:?}", k.shape),
        ));
    }
    let allow_zero = c.opset >= 14 && flag(c, "allowzero")?;
    check_reshape_target(c, &target, allow_zero)?;
    let x = c.required(0)?;
    if let Some(data) = c.consts.get(&x) {
        let shape = resolve_reshape(c, &target, &data.shape, data.len())?;
        return Ok(Built::Const(Const {
            shape,
            data: data.data.clone(),
        }));
    }
    c.op_on_first(Op::Reshape { shape: target })
}

fn add(c: &NodeCtx<'_>) -> Result<Built> {
    c.op(Op::Add)
}

fn concat(c: &NodeCtx<'_>) -> Result<Built> {
    let axis = axis_attr(c, None)?;
    if let Some(b) = fold_concat(c, axis)? {
        return Ok(b);
    }
    c.op(Op::Concat { axis })
}

/// A Concat of 1-D integer constants (the shape vectors of exported `view`/`flatten` code) is
/// folded, keeping which elements are batch-dependent dims.
fn fold_concat(c: &NodeCtx<'_>, axis: i64) -> Result<Option<Built>> {
    let names = c.all_inputs();
    if names.is_empty() || !(axis == 0 || axis == -1) {
        return Ok(None);
    }
    let mut data = Vec::new();
    let mut dims: SymDims = Vec::new();
    for n in &names {
        match c
            .consts
            .get(n)
            .and_then(|k| Some((k.shape.len(), k.ints()?)))
        {
            Some((1, v)) => {
                data.extend_from_slice(&v);
                match c.sym.get(n) {
                    Some(d) => dims.extend(d.iter().cloned()),
                    None => dims.extend(std::iter::repeat_n(None, v.len())),
                }
            }
            _ => return Ok(None),
        }
    }
    let k = Const {
        shape: vec![data.len()],
        data: Data::I64(data),
    };
    Ok(Some(if dims.iter().any(Option::is_some) {
        Built::SymConst(k, dims)
    } else {
        Built::Const(k)
    }))
}

fn dropout(c: &NodeCtx<'_>) -> Result<Built> {
    let ratio = if c.opset < 12 {
        c.float("ratio")?.unwrap_or(0.5)
    } else {
        if let Some(t) = c.const_input(2, "training_mode")?
            && t.as_i64().is_none_or(|v| v.iter().any(|&x| x != 0))
        {
            return Err(c.bad(
                "training_mode",
                "dropout that stays active at inference is not supported",
            ));
        }
        match c.const_input(1, "ratio")? {
            None => 0.5,
            Some(k) => k
                .scalar_f32()
                .ok_or_else(|| c.bad("ratio", "must be a scalar"))?,
        }
    };
    if !(0.0..1.0).contains(&ratio) {
        return Err(c.bad("ratio", format!("{ratio} is outside [0, 1)")));
    }
    c.op_on_first(Op::Dropout { ratio })
}

fn constant(c: &NodeCtx<'_>) -> Result<Built> {
    if let Some(t) = c.tensor("value")? {
        return Ok(Built::Const(tensor::decode(t.clone())?));
    }
    if let Some(v) = c.float("value_float")? {
        return Ok(Built::Const(Const {
            shape: vec![],
            data: Data::F32(vec![v]),
        }));
    }
    if let Some(v) = c.floats("value_floats")? {
        return Ok(Built::Const(Const {
            shape: vec![v.len()],
            data: Data::F32(v.to_vec()),
        }));
    }
    if let Some(v) = c.int("value_int")? {
        return Ok(Built::Const(Const {
            shape: vec![],
            data: Data::I64(vec![v]),
        }));
    }
    if let Some(v) = c.ints("value_ints")? {
        return Ok(Built::Const(Const {
            shape: vec![v.len()],
            data: Data::I64(v.to_vec()),
        }));
    }
    let other = c
        .proto
        .attribute
        .first()
        .map(|a| a.name())
        .unwrap_or("none");
    Err(c.bad("value", format!("no supported value attribute (found: {other}); sparse and string constants are not supported")))
}

fn identity(c: &NodeCtx<'_>) -> Result<Built> {
    Ok(Built::Alias(c.required(0)?))
}

/// A finite float attribute with a default.
fn finite(c: &NodeCtx<'_>, attr: &'static str, default: f32) -> Result<f32> {
    let v = c.float(attr)?.unwrap_or(default);
    if !v.is_finite() {
        return Err(c.bad(attr, format!("{v} is not a finite number")));
    }
    Ok(v)
}

fn leaky_relu(c: &NodeCtx<'_>) -> Result<Built> {
    let alpha = finite(c, "alpha", 0.01)?;
    c.op(Op::LeakyRelu { alpha })
}

fn hard_sigmoid(c: &NodeCtx<'_>) -> Result<Built> {
    let alpha = finite(c, "alpha", 0.2)?;
    let beta = finite(c, "beta", 0.5)?;
    c.op(Op::HardSigmoid { alpha, beta })
}

fn hard_swish(c: &NodeCtx<'_>) -> Result<Built> {
    c.op(Op::HardSwish)
}

fn sign(c: &NodeCtx<'_>) -> Result<Built> {
    c.op(Op::Sign)
}

fn round(c: &NodeCtx<'_>) -> Result<Built> {
    c.op(Op::Round)
}

fn gelu(c: &NodeCtx<'_>) -> Result<Built> {
    let tanh = match c.string("approximate")?.unwrap_or("none") {
        "none" => false,
        "tanh" => true,
        other => {
            return Err(c.bad(
                "approximate",
                format!("unknown value `{other}` (none or tanh)"),
            ));
        }
    };
    c.op(Op::Gelu { tanh })
}

fn mul(c: &NodeCtx<'_>) -> Result<Built> {
    c.op(Op::Mul)
}

fn sub(c: &NodeCtx<'_>) -> Result<Built> {
    c.op(Op::Sub)
}

fn div(c: &NodeCtx<'_>) -> Result<Built> {
    c.op(Op::Div)
}

fn transpose(c: &NodeCtx<'_>) -> Result<Built> {
    let perm = match c.ints("perm")? {
        None => Vec::new(),
        Some(p) => {
            if p.len() > LIMITS.max_rank {
                return Err(c.bad(
                    "perm",
                    format!(
                        "has {} entries; the rank limit is {}",
                        p.len(),
                        LIMITS.max_rank
                    ),
                ));
            }
            let perm: Vec<usize> = p
                .iter()
                .map(|&v| to_usize(c, "perm", v, 0, p.len().saturating_sub(1)))
                .collect::<Result<_>>()?;
            let mut sorted = perm.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != perm.len() {
                return Err(c.bad("perm", format!("{p:?} is not a permutation")));
            }
            perm
        }
    };
    c.op_on_first(Op::Transpose { perm })
}

/// A list of axes: bounded length, each in `-MAX_RANK..MAX_RANK`.
fn check_axes(c: &NodeCtx<'_>, axes: &[i64]) -> Result<Vec<i64>> {
    if axes.len() > LIMITS.max_rank {
        return Err(c.bad(
            "axes",
            format!(
                "has {} entries; the rank limit is {}",
                axes.len(),
                LIMITS.max_rank
            ),
        ));
    }
    if let Some(a) = axes
        .iter()
        .find(|a| a.unsigned_abs() >= LIMITS.max_rank as u64)
    {
        return Err(c.bad("axes", format!("axis {a} is out of range")));
    }
    Ok(axes.to_vec())
}

/// Squeeze/Unsqueeze axes: an attribute before opset 13, a constant input from 13 on.
fn squeeze_axes(c: &NodeCtx<'_>) -> Result<Option<Vec<i64>>> {
    if c.opset < 13 {
        return c.ints("axes")?.map(|a| check_axes(c, a)).transpose();
    }
    match c.const_input(1, "axes")? {
        None => Ok(None),
        Some(k) => {
            if k.shape.len() > 1 {
                return Err(c.bad("axes", format!("must be 1-D, has shape {:?}", k.shape)));
            }
            let v = k
                .ints()
                .ok_or_else(|| c.bad("axes", "must be an int64 tensor"))?;
            check_axes(c, &v).map(Some)
        }
    }
}

/// A Squeeze/Unsqueeze of a constant becomes a constant with the new shape.
fn fold_reshape(c: &NodeCtx<'_>, op: &Op) -> Result<Option<Built>> {
    let Some(k) = c.input(0).and_then(|x| c.consts.get(x)) else {
        return Ok(None);
    };
    let node = crate::graph::Node {
        name: c.name.to_string(),
        op: op.clone(),
        inputs: vec![String::new()],
        outputs: vec![String::new()],
    };
    let shape = crate::ops::infer_shape(&node, &[Some(&k.shape)])?
        .into_iter()
        .next()
        .unwrap_or_default();
    let c2 = Const {
        shape,
        data: k.data.clone(),
    };
    // Same elements in the same order: batch-dependent entries keep their meaning.
    Ok(Some(match c.input(0).and_then(|x| c.sym.get(x)) {
        Some(dims) => Built::SymConst(c2, dims.clone()),
        None => Built::Const(c2),
    }))
}

fn squeeze(c: &NodeCtx<'_>) -> Result<Built> {
    let op = Op::Squeeze {
        axes: squeeze_axes(c)?.unwrap_or_default(),
    };
    if let Some(b) = fold_reshape(c, &op)? {
        return Ok(b);
    }
    c.op_on_first(op)
}

fn unsqueeze(c: &NodeCtx<'_>) -> Result<Built> {
    let axes = squeeze_axes(c)?.ok_or_else(|| c.bad("axes", "is required"))?;
    if axes.is_empty() {
        return Err(c.bad("axes", "must not be empty"));
    }
    let op = Op::Unsqueeze { axes };
    if let Some(b) = fold_reshape(c, &op)? {
        return Ok(b);
    }
    c.op_on_first(op)
}

fn global_max_pool(c: &NodeCtx<'_>) -> Result<Built> {
    c.op(Op::GlobalMaxPool)
}

fn pad(c: &NodeCtx<'_>) -> Result<Built> {
    let mode = match c.string("mode")?.unwrap_or("constant") {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" if c.opset >= 19 => PadMode::Wrap,
        other => return Err(c.bad("mode", format!("unknown value `{other}`"))),
    };
    let (pads, value, axes) = if c.opset < 11 {
        let pads = c
            .ints("pads")?
            .ok_or_else(|| c.bad("pads", "is required"))?
            .to_vec();
        (pads, finite(c, "value", 0.0)?, Vec::new())
    } else {
        let k = c
            .const_input(1, "pads")?
            .ok_or_else(|| c.bad("pads", "the pads input is required"))?;
        let pads = match k.ints() {
            Some(v) if k.shape.len() == 1 => v,
            _ => return Err(c.bad("pads", "must be a 1-D int64 tensor")),
        };
        let value = match c.const_input(2, "constant_value")? {
            None => 0.0,
            Some(k) => k
                .scalar_f32()
                .ok_or_else(|| c.bad("constant_value", "must be a scalar"))?,
        };
        let axes = match c.const_input(3, "axes")? {
            None => Vec::new(),
            Some(k) => match k.ints() {
                Some(v) if k.shape.len() == 1 => check_axes(c, &v)?,
                _ => return Err(c.bad("axes", "must be a 1-D int64 tensor")),
            },
        };
        (pads, value, axes)
    };
    if pads.len() > 2 * LIMITS.max_rank {
        return Err(c.bad("pads", format!("has {} values", pads.len())));
    }
    let pads: Vec<usize> = pads
        .iter()
        .map(|&p| {
            if p < 0 {
                Err(c.bad(
                    "pads",
                    format!("negative padding {p} (cropping) is not supported"),
                ))
            } else {
                to_usize(c, "pads", p, 0, LIMITS.max_window)
            }
        })
        .collect::<Result<_>>()?;
    if value.is_nan() && mode == PadMode::Constant {
        return Err(c.bad("constant_value", "must not be NaN"));
    }
    c.op_on_first(Op::Pad(PadAttrs {
        pads,
        axes,
        mode,
        value,
    }))
}

fn layer_normalization(c: &NodeCtx<'_>) -> Result<Built> {
    let axis = axis_attr(c, Some(-1))?;
    let epsilon = finite(c, "epsilon", 1e-5)?;
    if epsilon < 0.0 {
        return Err(c.bad("epsilon", format!("{epsilon} is negative")));
    }
    c.op(Op::LayerNorm { axis, epsilon })
}

/// Reshape to a target computed from `Shape` with batch-dependent elements: an element that is
/// dim `i` of the data input at position `i` becomes `0` (copy), and a single other one
/// becomes `-1` (inferred) when the target has no `-1` yet.
fn reshape_symbolic(c: &NodeCtx<'_>) -> Result<Option<Built>> {
    let Some(dims) = c.input(1).and_then(|n| c.sym.get(n)) else {
        return Ok(None);
    };
    let x = c.required(0)?;
    let Some(Const {
        data: Data::I64(values),
        ..
    }) = c.input(1).and_then(|n| c.consts.get(n))
    else {
        return Ok(None);
    };
    let mut target = values.clone();
    let mut pending = Vec::new();
    for (i, d) in dims.iter().enumerate() {
        match d {
            Some((v, j)) if *v == x && *j == i => target[i] = 0,
            Some(_) => pending.push(i),
            None => {}
        }
    }
    match pending.as_slice() {
        [] => {}
        [i] if !target.contains(&-1) => target[*i] = -1,
        _ => {
            return Err(c.bad(
                "shape",
                "the target uses batch-dependent dims Lithe cannot express with 0 or -1",
            ));
        }
    }
    check_reshape_target(c, &target, false)?;
    c.op_on_first(Op::Reshape { shape: target }).map(Some)
}

/// `Shape` of a value whose shape is known at import: a constant, with batch-dependent dims
/// marked (see [`SymDims`]).
fn shape(c: &NodeCtx<'_>) -> Result<Built> {
    let x = c.required(0)?;
    let [s1, s2] = match c.consts.get(&x) {
        Some(k) => [k.shape.clone(), k.shape.clone()],
        None => match (c.shapes[0].get(&x), c.shapes[1].get(&x)) {
            (Some(a), Some(b)) if a.len() == b.len() => [a.clone(), b.clone()],
            _ => {
                return Err(c.bad(
                    "data",
                    format!("the shape of `{x}` is not known at import; Lithe folds Shape only"),
                ));
            }
        },
    };
    let r = s1.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let (start, end) = if c.opset >= 15 {
        (
            clamp(c.int("start")?.unwrap_or(0)),
            clamp(c.int("end")?.unwrap_or(r)),
        )
    } else {
        (0, s1.len())
    };
    let end = end.max(start);
    let data: Vec<i64> = s1[start..end].iter().map(|&d| d as i64).collect();
    let dims: SymDims = (start..end)
        .map(|i| (s1[i] != s2[i]).then(|| (x.clone(), i)))
        .collect();
    let k = Const {
        shape: vec![data.len()],
        data: Data::I64(data),
    };
    Ok(if dims.iter().any(Option::is_some) {
        Built::SymConst(k, dims)
    } else {
        Built::Const(k)
    })
}

/// `Gather` on constants (indices into a shape vector, as exported `view` code does).
fn gather(c: &NodeCtx<'_>) -> Result<Built> {
    let axis = axis_attr(c, Some(0))?;
    let name = c.required(0)?;
    let data = c.consts.get(&name).ok_or_else(|| {
        c.bad(
            "data",
            format!("input `{name}` must be a constant; Lithe folds Gather only"),
        )
    })?;
    let sym = c.sym.get(&name);
    let idx = c
        .const_input(1, "indices")?
        .ok_or_else(|| c.bad("indices", "is required"))?;
    let ids = idx
        .ints()
        .ok_or_else(|| c.bad("indices", "must be an integer tensor"))?;
    let r = data.shape.len();
    let a = usize::try_from(if axis < 0 { axis + r as i64 } else { axis })
        .ok()
        .filter(|&a| a < r)
        .ok_or_else(|| c.bad("axis", format!("{axis} is out of range for rank {r}")))?;
    let len = data.shape[a];
    let at: Vec<usize> = ids
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + len as i64 } else { i };
            usize::try_from(j)
                .ok()
                .filter(|&j| j < len)
                .ok_or_else(|| c.bad("indices", format!("index {i} is out of range for {len}")))
        })
        .collect::<Result<_>>()?;
    let outer: usize = data.shape[..a].iter().product();
    let inner: usize = data.shape[a + 1..].iter().product();
    let mut shape = data.shape[..a].to_vec();
    shape.extend_from_slice(&idx.shape);
    shape.extend_from_slice(&data.shape[a + 1..]);
    let n = crate::tensor::checked_numel(&shape)?;
    if n > LIMITS.max_tensor_elements {
        return Err(Error::Limit {
            what: "Gather output",
            got: n as u64,
            limit: LIMITS.max_tensor_elements as u64,
        });
    }
    let order: Vec<usize> = (0..outer)
        .flat_map(|o| {
            at.iter()
                .flat_map(move |&j| (0..inner).map(move |k| (o * len + j) * inner + k))
        })
        .collect();
    // Every index is below outer·len·inner, the constant's element count.
    let data2 = data.select(&order);
    let k = Const { shape, data: data2 };
    Ok(match sym {
        Some(d) => {
            let dims: SymDims = order.iter().map(|&i| d.get(i).cloned().flatten()).collect();
            if dims.iter().any(Option::is_some) {
                Built::SymConst(k, dims)
            } else {
                Built::Const(k)
            }
        }
        None => Built::Const(k),
    })
}

// ---------------------------------------------------------------------------------------------
// Quantization and integer ops (see `crate::ops::quant` for how integer values are carried).

impl NodeCtx<'_> {
    /// The element type of input `i` (an error when it is absent or unknown).
    fn dtype(&self, i: usize, what: &'static str) -> Result<DType> {
        let name = self.input(i).ok_or_else(|| self.bad(what, "is required"))?;
        match self.consts.get(name) {
            Some(k) => Ok(k.dtype()),
            None => self.dtypes.get(name).copied().ok_or_else(|| {
                self.bad(what, format!("the element type of `{name}` is not known"))
            }),
        }
    }

    /// The element type of an optional zero point, or `default` when it is absent.
    fn zp_dtype(&self, i: usize, what: &'static str, default: DType) -> Result<DType> {
        match self.input(i) {
            None => Ok(default),
            Some(_) => self.dtype(i, what),
        }
    }
}

/// int8 or uint8: the types the quantized ops compute with.
fn quant_type(c: &NodeCtx<'_>, what: &'static str, t: DType) -> Result<DType> {
    match t {
        DType::I8 | DType::U8 => Ok(t),
        other => Err(c.bad(
            what,
            format!("element type {other} is not supported (int8 or uint8)"),
        )),
    }
}

/// A constant scale input must be positive and finite (a runtime one is checked when run).
fn check_scale(c: &NodeCtx<'_>, i: usize, what: &'static str) -> Result<()> {
    let Some(k) = c.input(i).and_then(|n| c.consts.get(n)) else {
        return Ok(());
    };
    if let Data::F32(v) = &k.data
        && let Some(bad) = v.iter().find(|x| !(x.is_finite() && **x > 0.0))
    {
        return Err(c.bad(what, format!("must be positive and finite, found {bad}")));
    }
    Ok(())
}

/// The `axis` of QuantizeLinear/DequantizeLinear (opset 13+; per-tensor only before), with
/// `block_size` (opset 21) refused.
fn quant_axis(c: &NodeCtx<'_>) -> Result<i64> {
    if c.opset >= 21 && c.int("block_size")?.unwrap_or(0) != 0 {
        return Err(c.bad("block_size", "blocked quantization is not supported"));
    }
    if c.opset < 13 {
        if let Some(k) = c.input(1).and_then(|n| c.consts.get(n))
            && k.len() != 1
        {
            return Err(c.bad(
                "scale",
                format!(
                    "opset {} allows a scalar scale only (per-axis needs opset 13)",
                    c.opset
                ),
            ));
        }
        return Ok(1);
    }
    axis_attr(c, Some(1))
}

fn quantize_linear(c: &NodeCtx<'_>) -> Result<Built> {
    let axis = quant_axis(c)?;
    check_scale(c, 1, "y_scale")?;
    let declared = match c.int("output_dtype")?.filter(|_| c.opset >= 21) {
        None | Some(0) => None,
        Some(t) => Some(
            i32::try_from(t)
                .ok()
                .and_then(tensor::dtype_of)
                .ok_or_else(|| c.bad("output_dtype", format!("type #{t} is not supported")))?,
        ),
    };
    let to = match (c.input(2), declared) {
        (Some(_), d) => {
            let z = c.dtype(2, "y_zero_point")?;
            if d.is_some_and(|d| d != z) {
                return Err(c.bad(
                    "output_dtype",
                    format!("differs from the zero point's type {z}"),
                ));
            }
            z
        }
        (None, Some(d)) => d,
        (None, None) => DType::U8,
    };
    let to = quant_type(c, "y_zero_point", to)?;
    c.op(Op::QuantizeLinear { axis, to })
}

fn dequantize_linear(c: &NodeCtx<'_>) -> Result<Built> {
    let axis = quant_axis(c)?;
    check_scale(c, 1, "x_scale")?;
    let from = match c.dtype(0, "x")? {
        t @ (DType::I8 | DType::U8 | DType::I32) => t,
        other => {
            return Err(c.bad(
                "x",
                format!("element type {other} is not supported (int8, uint8 or int32)"),
            ));
        }
    };
    c.op(Op::DequantizeLinear { axis, from })
}

fn dynamic_quantize_linear(c: &NodeCtx<'_>) -> Result<Built> {
    c.op(Op::DynamicQuantizeLinear)
}

/// Conv attributes of QLinearConv/ConvInteger, the kernel taken from the weight (input `w`)
/// when the file omits it.
fn conv_window(c: &NodeCtx<'_>, w: usize) -> Result<ConvAttrs> {
    let win = window(c)?;
    let kernel = match win.kernel {
        Some(k) => k,
        None => {
            let shape = c
                .input(w)
                .and_then(|n| {
                    c.consts
                        .get(n)
                        .map(|k| k.shape.clone())
                        .or_else(|| c.shapes[0].get(n).cloned())
                })
                .ok_or_else(|| {
                    c.bad(
                        "kernel_shape",
                        "is required when the weight's shape is not known",
                    )
                })?;
            if shape.len() != 4 {
                return Err(c.bad(
                    "kernel_shape",
                    format!("the weight has shape {shape:?}; Lithe supports 2-D windows only"),
                ));
            }
            [shape[2], shape[3]]
        }
    };
    let groups = to_usize(
        c,
        "group",
        c.int("group")?.unwrap_or(1),
        1,
        LIMITS.max_window,
    )?;
    Ok(ConvAttrs {
        kernel,
        strides: win.strides,
        pads: win.pads,
        dilations: win.dilations,
        groups,
        auto_pad: win.auto_pad,
    })
}

fn qlinear_conv(c: &NodeCtx<'_>) -> Result<Built> {
    let conv = conv_window(c, 3)?;
    for (i, what) in [(1, "x_scale"), (4, "w_scale"), (6, "y_scale")] {
        check_scale(c, i, what)?;
    }
    let x = quant_type(c, "x", c.dtype(0, "x")?)?;
    let w = quant_type(c, "w", c.dtype(3, "w")?)?;
    let y = quant_type(c, "y_zero_point", c.zp_dtype(7, "y_zero_point", x)?)?;
    c.op(Op::QLinearConv { conv, x, w, y })
}

fn qlinear_matmul(c: &NodeCtx<'_>) -> Result<Built> {
    for (i, what) in [(1, "a_scale"), (4, "b_scale"), (6, "y_scale")] {
        check_scale(c, i, what)?;
    }
    let a = quant_type(c, "a", c.dtype(0, "a")?)?;
    let b = quant_type(c, "b", c.dtype(3, "b")?)?;
    let y = quant_type(c, "y_zero_point", c.zp_dtype(7, "y_zero_point", a)?)?;
    c.op(Op::QLinearMatMul { a, b, y })
}

fn matmul_integer(c: &NodeCtx<'_>) -> Result<Built> {
    let a = quant_type(c, "A", c.dtype(0, "A")?)?;
    let b = quant_type(c, "B", c.dtype(1, "B")?)?;
    c.op(Op::MatMulInteger { a, b })
}

fn conv_integer(c: &NodeCtx<'_>) -> Result<Built> {
    let conv = conv_window(c, 1)?;
    let x = quant_type(c, "x", c.dtype(0, "x")?)?;
    let w = quant_type(c, "w", c.dtype(1, "w")?)?;
    c.op(Op::ConvInteger { conv, x, w })
}

fn cast(c: &NodeCtx<'_>) -> Result<Built> {
    let to = c.int("to")?.ok_or_else(|| c.bad("to", "is required"))?;
    let to = i32::try_from(to)
        .ok()
        .and_then(tensor::dtype_of)
        .ok_or_else(|| {
            c.bad(
                "to",
                format!(
                    "type #{to} is not supported (Lithe casts between float, int8, uint8 and int32)"
                ),
            )
        })?;
    let from = match c.dtype(0, "input")? {
        DType::I64 => {
            return Err(c.bad(
                "input",
                "casting int64 values is not supported (float, int8, uint8 and int32 only)",
            ));
        }
        t => t,
    };
    c.op(Op::Cast { from, to })
}

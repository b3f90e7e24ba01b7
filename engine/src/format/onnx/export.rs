//! Graph → ModelProto (IR 8, opset 13, or the newest opset one of its ops needs).

use super::proto::attribute_proto::AttributeType;
use super::proto::tensor_shape_proto::{Dimension, dimension::Value as DimValue};
use super::proto::type_proto::{Tensor as TensorType, Value as TypeValue};
use super::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use super::tensor::{encode_i64, encode_scalar, encode_typed, onnx_type};
use super::{EXPORT_IR_VERSION, EXPORT_OPSET};
use crate::graph::{AutoPad, ConvAttrs, Dim, Graph, Node, Op, PadMode, PoolAttrs};
use crate::tensor::DType;
use crate::{Error, Result};
use prost::Message;
use std::collections::{HashMap, HashSet};

fn attr(name: &str, ty: AttributeType) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(ty as i32),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        i: Some(v),
        ..attr(name, AttributeType::Int)
    }
}

fn ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        ints: v.iter().map(|&x| x as i64).collect(),
        ..attr(name, AttributeType::Ints)
    }
}

fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        f: Some(v),
        ..attr(name, AttributeType::Float)
    }
}

fn string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        s: Some(v.as_bytes().to_vec()),
        ..attr(name, AttributeType::String)
    }
}

fn auto_pad_name(a: AutoPad) -> &'static str {
    match a {
        AutoPad::NotSet => "NOTSET",
        AutoPad::SameUpper => "SAME_UPPER",
        AutoPad::SameLower => "SAME_LOWER",
        AutoPad::Valid => "VALID",
    }
}

/// `auto_pad` or `pads` (never both), as ONNX requires.
fn padding(auto: AutoPad, pads: &[usize; 4]) -> AttributeProto {
    match auto {
        AutoPad::NotSet => ints("pads", pads),
        a => string("auto_pad", auto_pad_name(a)),
    }
}

fn pool_window(a: &PoolAttrs) -> Vec<AttributeProto> {
    vec![
        ints("kernel_shape", &a.kernel),
        ints("strides", &a.strides),
        padding(a.auto_pad, &a.pads),
    ]
}

fn conv_attrs(a: &ConvAttrs) -> Vec<AttributeProto> {
    vec![
        ints("kernel_shape", &a.kernel),
        ints("strides", &a.strides),
        padding(a.auto_pad, &a.pads),
        ints("dilations", &a.dilations),
        int("group", a.groups as i64),
    ]
}

fn tensor_value(name: &str, dims: Vec<Dimension>, dtype: DType) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(TypeValue::TensorType(TensorType {
                elem_type: Some(onnx_type(dtype) as i32),
                shape: Some(TensorShapeProto { dim: dims }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn dim_of(d: &Dim) -> Dimension {
    match d {
        Dim::Fixed(n) => Dimension {
            value: Some(DimValue::DimValue(*n as i64)),
            ..Default::default()
        },
        Dim::Sym(s) if s.is_empty() => Dimension::default(),
        Dim::Sym(s) => Dimension {
            value: Some(DimValue::DimParam(s.clone())),
            ..Default::default()
        },
    }
}

/// Builds node protos and the helper initializers (shapes, clip bounds, dropout ratios).
struct Writer {
    shapes: HashMap<String, Vec<usize>>,
    taken: HashSet<String>,
    nodes: Vec<NodeProto>,
    helpers: Vec<TensorProto>,
}

impl Writer {
    /// A value or node name not used anywhere in the graph yet.
    fn fresh(&mut self, base: String) -> String {
        let mut name = base.clone();
        let mut k = 1;
        while self.taken.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.taken.insert(name.clone());
        name
    }

    fn push(
        &mut self,
        name: &str,
        op_type: &str,
        inputs: Vec<String>,
        outputs: Vec<String>,
        attrs: Vec<AttributeProto>,
    ) {
        self.nodes.push(NodeProto {
            input: inputs,
            output: outputs,
            name: Some(name.to_string()),
            op_type: Some(op_type.to_string()),
            domain: Some(String::new()),
            attribute: attrs,
            ..Default::default()
        });
    }

    fn helper(&mut self, base: String, t: impl FnOnce(&str) -> TensorProto) -> String {
        let name = self.fresh(base);
        self.helpers.push(t(&name));
        name
    }

    fn first_input(n: &Node) -> Vec<String> {
        n.inputs.first().cloned().into_iter().collect()
    }

    fn node(&mut self, n: &Node) -> Result<()> {
        let all = n.inputs.clone();
        let outs = n.outputs.clone();
        let op_type = n.op.name();
        match &n.op {
            Op::Gemm(a) => self.push(
                &n.name,
                op_type,
                all,
                outs,
                vec![
                    float("alpha", a.alpha),
                    float("beta", a.beta),
                    int("transA", i64::from(a.trans_a)),
                    int("transB", i64::from(a.trans_b)),
                ],
            ),
            Op::MatMul
            | Op::GlobalAvgPool
            | Op::GlobalMaxPool
            | Op::Relu
            | Op::Sigmoid
            | Op::Tanh
            | Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::Sign
            | Op::Round
            | Op::HardSwish => self.push(&n.name, op_type, all, outs, vec![]),
            Op::LeakyRelu { alpha } => {
                self.push(&n.name, op_type, all, outs, vec![float("alpha", *alpha)])
            }
            Op::HardSigmoid { alpha, beta } => self.push(
                &n.name,
                op_type,
                all,
                outs,
                vec![float("alpha", *alpha), float("beta", *beta)],
            ),
            Op::Gelu { tanh } => self.push(
                &n.name,
                op_type,
                all,
                outs,
                vec![string("approximate", if *tanh { "tanh" } else { "none" })],
            ),
            Op::Transpose { perm } => {
                let attrs = if perm.is_empty() {
                    vec![]
                } else {
                    vec![ints("perm", perm)]
                };
                self.push(&n.name, op_type, all, outs, attrs);
            }
            Op::Squeeze { axes } | Op::Unsqueeze { axes } => {
                let mut inputs = Self::first_input(n);
                if !axes.is_empty() {
                    inputs.push(self.helper(format!("{}__axes", n.name), |k| encode_i64(k, axes)));
                }
                self.push(&n.name, op_type, inputs, outs, vec![]);
            }
            Op::Pad(a) => {
                // Opset 13 has no `axes` input: spell out every axis.
                let rank = n
                    .inputs
                    .first()
                    .and_then(|x| self.shapes.get(x))
                    .map_or(0, Vec::len);
                let mut pads = vec![0i64; 2 * rank];
                let axes: Vec<i64> = if a.axes.is_empty() {
                    (0..rank as i64).collect()
                } else {
                    a.axes.clone()
                };
                for (k, &ax) in axes.iter().enumerate() {
                    let i = if ax < 0 { ax + rank as i64 } else { ax };
                    let (Ok(i), Some(&b), Some(&e)) = (
                        usize::try_from(i),
                        a.pads.get(k),
                        a.pads.get(k + axes.len()),
                    ) else {
                        continue;
                    };
                    if i < rank {
                        pads[i] = b as i64;
                        pads[i + rank] = e as i64;
                    }
                }
                let mut inputs = Self::first_input(n);
                inputs.push(self.helper(format!("{}__pads", n.name), |k| encode_i64(k, &pads)));
                if a.mode == PadMode::Constant && a.value != 0.0 {
                    inputs.push(
                        self.helper(format!("{}__value", n.name), |k| encode_scalar(k, a.value)),
                    );
                }
                self.push(
                    &n.name,
                    op_type,
                    inputs,
                    outs,
                    vec![string("mode", a.mode.name())],
                );
            }
            Op::LayerNorm { axis, epsilon } => self.push(
                &n.name,
                op_type,
                all,
                outs,
                vec![int("axis", *axis), float("epsilon", *epsilon)],
            ),
            Op::Conv(a) | Op::QLinearConv { conv: a, .. } | Op::ConvInteger { conv: a, .. } => {
                self.push(&n.name, op_type, all, outs, conv_attrs(a))
            }
            Op::QuantizeLinear { axis, to }
                if *to != DType::U8 && n.inputs.get(2).is_none_or(|z| z.is_empty()) =>
            {
                // ONNX's default output type is uint8: spell out a zero point of the type.
                let mut inputs = all;
                inputs.truncate(2);
                let zero = crate::tensor::zeros(&[]);
                inputs.push(self.helper(format!("{}__zero_point", n.name), |k| {
                    encode_typed(k, &zero, *to)
                }));
                self.push(&n.name, op_type, inputs, outs, vec![int("axis", *axis)])
            }
            Op::QuantizeLinear { axis, .. } | Op::DequantizeLinear { axis, .. } => {
                self.push(&n.name, op_type, all, outs, vec![int("axis", *axis)])
            }
            Op::DynamicQuantizeLinear | Op::QLinearMatMul { .. } | Op::MatMulInteger { .. } => {
                self.push(&n.name, op_type, all, outs, vec![])
            }
            Op::Cast { to, .. } => self.push(
                &n.name,
                op_type,
                all,
                outs,
                vec![int("to", onnx_type(*to) as i64)],
            ),
            Op::MaxPool(a) => {
                let mut attrs = pool_window(a);
                attrs.push(ints("dilations", &a.dilations));
                attrs.push(int("ceil_mode", i64::from(a.ceil_mode)));
                self.push(&n.name, op_type, Self::first_input(n), outs, attrs);
            }
            Op::AvgPool(a) => {
                if a.dilations != [1, 1] {
                    return Err(Error::Attribute {
                        node: n.name.clone(),
                        op: "AveragePool",
                        attr: "dilations",
                        detail: "opset 13 has no dilated average pooling".into(),
                    });
                }
                let mut attrs = pool_window(a);
                attrs.push(int("ceil_mode", i64::from(a.ceil_mode)));
                attrs.push(int("count_include_pad", i64::from(a.count_include_pad)));
                self.push(&n.name, op_type, Self::first_input(n), outs, attrs);
            }
            Op::BatchNorm { epsilon, momentum } => self.push(
                &n.name,
                op_type,
                all,
                outs,
                vec![float("epsilon", *epsilon), float("momentum", *momentum)],
            ),
            Op::Clip { min, max } => {
                let mut inputs = Self::first_input(n);
                let lo = (*min != f32::NEG_INFINITY)
                    .then(|| self.helper(format!("{}__min", n.name), |k| encode_scalar(k, *min)));
                let hi = (*max != f32::INFINITY)
                    .then(|| self.helper(format!("{}__max", n.name), |k| encode_scalar(k, *max)));
                if lo.is_some() || hi.is_some() {
                    inputs.push(lo.unwrap_or_default());
                }
                inputs.extend(hi);
                self.push(&n.name, op_type, inputs, outs, vec![]);
            }
            Op::Softmax { axis, coerce_2d } | Op::LogSoftmax { axis, coerce_2d } => {
                self.softmax(n, *axis, *coerce_2d)?;
            }
            Op::Flatten { axis } => {
                self.push(&n.name, op_type, all, outs, vec![int("axis", *axis)])
            }
            Op::Reshape { shape } => {
                let mut inputs = Self::first_input(n);
                inputs.push(self.helper(format!("{}__shape", n.name), |k| encode_i64(k, shape)));
                self.push(&n.name, op_type, inputs, outs, vec![]);
            }
            Op::Concat { axis } => self.push(&n.name, op_type, all, outs, vec![int("axis", *axis)]),
            Op::Dropout { ratio } => {
                let mut inputs = Self::first_input(n);
                inputs
                    .push(self.helper(format!("{}__ratio", n.name), |k| encode_scalar(k, *ratio)));
                self.push(&n.name, op_type, inputs, outs, vec![]);
            }
        }
        Ok(())
    }

    /// Softmax/LogSoftmax. Opset-13 semantics normalise along one axis; the older "coerce to
    /// 2-D" form is the same thing when the axis is the last one, and otherwise becomes
    /// Flatten → Softmax(axis 1) → Reshape back.
    fn softmax(&mut self, n: &Node, axis: i64, coerce_2d: bool) -> Result<()> {
        let op_type = n.op.name();
        let x = n.inputs.first().cloned().unwrap_or_default();
        let rank = self.shapes.get(&x).map(Vec::len).unwrap_or(0);
        let r = rank as i64;
        let a = if axis < 0 { axis + r } else { axis };
        if !coerce_2d || a == r - 1 {
            self.push(
                &n.name,
                op_type,
                vec![x],
                n.outputs.clone(),
                vec![int("axis", axis)],
            );
            return Ok(());
        }
        let Some(in_shape) = self.shapes.get(&x).cloned() else {
            return Err(Error::Graph(format!(
                "no shape for the input `{x}` of `{}`",
                n.name
            )));
        };
        let a = usize::try_from(a).map_err(|_| Error::Attribute {
            node: n.name.clone(),
            op: op_type,
            attr: "axis",
            detail: format!("{axis} is out of range for rank {rank}"),
        })?;
        let flat = self.fresh(format!("{}__flat", n.name));
        let soft = self.fresh(format!("{}__2d", n.name));
        let flatten_node = self.fresh(format!("{}__flatten", n.name));
        let reshape_node = self.fresh(format!("{}__reshape", n.name));
        // Keep the batch dimension dynamic: copy the leading dims (0), or infer dim 0 (-1).
        let target: Vec<i64> = in_shape
            .iter()
            .enumerate()
            .map(|(i, &d)| match (i < a, i) {
                (true, _) => 0,
                (false, 0) => -1,
                _ => d as i64,
            })
            .collect();
        let shape = self.helper(format!("{}__shape", n.name), |k| encode_i64(k, &target));
        self.push(
            &flatten_node,
            "Flatten",
            vec![x],
            vec![flat.clone()],
            vec![int("axis", a as i64)],
        );
        self.push(
            &n.name,
            op_type,
            vec![flat],
            vec![soft.clone()],
            vec![int("axis", 1)],
        );
        self.push(
            &reshape_node,
            "Reshape",
            vec![soft, shape],
            n.outputs.clone(),
            vec![],
        );
        Ok(())
    }
}

/// The default-domain opset the graph needs: [`EXPORT_OPSET`], or newer for HardSwish (14),
/// LayerNormalization (17), Pad's wrap mode (19) and Gelu (20).
pub(super) fn opset_for(g: &Graph) -> i64 {
    g.nodes
        .iter()
        .map(|n| match &n.op {
            Op::HardSwish => 14,
            Op::LayerNorm { .. } => 17,
            Op::Pad(a) if a.mode == PadMode::Wrap => 19,
            Op::Gelu { .. } => 20,
            _ => EXPORT_OPSET,
        })
        .fold(EXPORT_OPSET, i64::max)
}

pub(super) fn export(g: &Graph) -> Result<Vec<u8>> {
    let shapes = g.infer_shapes(1)?;
    // Dims that change with the batch size are symbolic in the declared outputs.
    let shapes2 = g.infer_shapes(2).ok();
    let sym = g
        .inputs
        .iter()
        .flat_map(|v| v.shape.iter())
        .find_map(|d| match d {
            Dim::Sym(s) if !s.is_empty() => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_else(|| "N".to_string());

    let mut taken: HashSet<String> = HashSet::new();
    taken.extend(g.inputs.iter().map(|v| v.name.clone()));
    taken.extend(g.weights.keys().cloned());
    for n in &g.nodes {
        taken.insert(n.name.clone());
        taken.extend(n.inputs.iter().cloned());
        taken.extend(n.outputs.iter().cloned());
    }
    let mut w = Writer {
        shapes,
        taken,
        nodes: Vec::new(),
        helpers: Vec::new(),
    };
    for n in &g.nodes {
        w.node(n)?;
    }

    let dtypes = g.dtypes()?;
    let dtype = |name: &str| dtypes.get(name).copied().unwrap_or(DType::F32);
    let mut initializer: Vec<TensorProto> = g
        .weights
        .iter()
        .map(|(k, t)| encode_typed(k, t, dtype(k)))
        .collect();
    initializer.append(&mut w.helpers);
    let input = g
        .inputs
        .iter()
        .map(|v| {
            tensor_value(
                &v.name,
                v.shape.iter().map(dim_of).collect(),
                dtype(&v.name),
            )
        })
        .collect();
    let output = g
        .outputs
        .iter()
        .map(|o| {
            let s1 = w.shapes.get(o).cloned().unwrap_or_default();
            let s2 = shapes2.as_ref().and_then(|m| m.get(o));
            let dims = s1
                .iter()
                .enumerate()
                .map(|(i, &d)| {
                    if s2.and_then(|s| s.get(i)).is_some_and(|&d2| d2 != d) {
                        dim_of(&Dim::Sym(sym.clone()))
                    } else {
                        dim_of(&Dim::Fixed(d))
                    }
                })
                .collect();
            tensor_value(o, dims, dtype(o))
        })
        .collect();
    let model = ModelProto {
        ir_version: Some(EXPORT_IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset_for(g)),
        }],
        producer_name: Some("lithe".to_string()),
        producer_version: Some(env!("CARGO_PKG_VERSION").to_string()),
        graph: Some(GraphProto {
            node: w.nodes,
            name: Some(if g.name.is_empty() {
                "lithe".to_string()
            } else {
                g.name.clone()
            }),
            initializer,
            input,
            output,
            ..Default::default()
        }),
        metadata_props: g
            .metadata
            .iter()
            .map(|(k, v)| StringStringEntryProto {
                key: Some(k.clone()),
                value: Some(v.clone()),
            })
            .collect(),
        ..Default::default()
    };
    Ok(model.encode_to_vec())
}

//! The integer-only int8 model ([`QGraph`]) as a QDQ ONNX graph: what onnxruntime's static
//! quantization writes, so any ONNX runtime runs Lithe's int8 model (and fuses the pairs into
//! int8 kernels where it can).
//!
//! - The input is quantized once: `QuantizeLinear → DequantizeLinear` with the input's
//!   `(scale, zero point)`.
//! - A Dense/Conv layer keeps its int8 weights as an int8 initializer behind a per-axis
//!   `DequantizeLinear` (axis 0, the per-channel scales, zero points 0) and its int32 bias
//!   behind a per-axis `DequantizeLinear` with scales `s_in · s_w[c]`, then the float `Gemm`
//!   (transB) or `Conv`, a `Clip` to the fused activation's range, and `QuantizeLinear →
//!   DequantizeLinear` with the output's parameters.
//! - Pooling, reshapes and clamps keep their input's quantization; average pooling and Add are
//!   re-quantized to their output's parameters.
//!
//! The float ops between the pairs compute exactly what [`QGraph::run_simulated`] computes (real
//! multipliers instead of the integer executor's Q31 ones, and round-half-to-even where the
//! integer model rounds half away from zero), so the classes agree with the integer model on
//! all but a few images (the tests ask for ≥ 99.5 % on MNIST).

use super::intonly::{QGraph, QOp, QParams, Window};
use crate::graph::{AutoPad, ConvAttrs, Dim, GemmAttrs, Graph, Node, Op, PoolAttrs, ValueInfo};
use crate::tensor::{DType, from_vec};
use crate::{Error, Result};

/// Builds the QDQ graph of `q` (validated, shapes inferred). Its output is the dequantized
/// logits, named `logits`.
pub fn to_qdq(q: &QGraph) -> Result<Graph> {
    let mut b = Builder {
        g: Graph {
            name: "int8_qdq".into(),
            ..Graph::default()
        },
        n: 0,
    };
    b.g.metadata
        .insert("lithe.preprocess".into(), q.preprocess.to_metadata());
    let mut input_shape = vec![Dim::Sym("N".into())];
    input_shape.extend(q.values[0].shape.iter().map(|&d| Dim::Fixed(d)));
    b.g.inputs.push(ValueInfo {
        name: q.input_name.clone(),
        shape: input_shape,
    });
    // The float value that holds each quantized value (already on its int8 grid).
    let mut names: Vec<Option<String>> = vec![None; q.values.len()];
    names[0] = Some(b.qdq(&q.input_name, q.values[0].q, "input"));
    for node in &q.nodes {
        let input = |k: usize| -> Result<String> {
            node.inputs
                .get(k)
                .and_then(|&i| names.get(i).cloned().flatten())
                .ok_or_else(|| Error::Invalid(format!("node `{}` reads an unset value", node.name)))
        };
        let x = input(0)?;
        let xq = q.values[node.inputs[0]].q;
        let out = &q.values[node.output];
        let oq = out.q;
        let tag = node.name.as_str();
        let y = match &node.op {
            QOp::Dense { w, rq } | QOp::Conv { w, rq, .. } => {
                let wf = b.dequantized_weight(tag, &w.shape, &w.data, &w.scales)?;
                let bias_scales: Vec<f32> = w.scales.iter().map(|s| s * xq.scale).collect();
                let bf = b.dequantized_bias(tag, &w.bias, &bias_scales)?;
                let op = match &node.op {
                    QOp::Conv { groups, win, .. } => Op::Conv(conv_attrs(win, *groups)),
                    _ => Op::Gemm(GemmAttrs {
                        trans_b: true,
                        ..GemmAttrs::default()
                    }),
                };
                let z = b.node(tag, op, &[&x, &wf, &bf]);
                let c = b.clip(tag, &z, oq, rq.act_min, rq.act_max);
                b.qdq(&c, oq, tag)
            }
            QOp::MaxPool(win) => b.node(tag, Op::MaxPool(pool_attrs(win, false)), &[&x]),
            QOp::AvgPool {
                win,
                count_include_pad,
            } => {
                let z = b.node(tag, Op::AvgPool(pool_attrs(win, *count_include_pad)), &[&x]);
                b.qdq(&z, oq, tag)
            }
            QOp::GlobalAvgPool => {
                let z = b.node(tag, Op::GlobalAvgPool, &[&x]);
                b.qdq(&z, oq, tag)
            }
            QOp::Reshape => {
                let mut shape = vec![-1i64];
                shape.extend(out.shape.iter().map(|&d| d as i64));
                b.node(tag, Op::Reshape { shape }, &[&x])
            }
            QOp::Clamp { lo, hi } => b.clip(tag, &x, oq, *lo, *hi),
            QOp::Add(a) => {
                let second = input(1)?;
                let z = b.node(tag, Op::Add, &[&x, &second]);
                let c = b.clip(tag, &z, oq, a.act_min, a.act_max);
                b.qdq(&c, oq, tag)
            }
        };
        names[node.output] = Some(y);
    }
    let last = names
        .get(q.output)
        .cloned()
        .flatten()
        .ok_or_else(|| Error::Invalid("the int8 model's output is never written".into()))?;
    // A named output that a runtime can ask for: `logits`.
    let logits = b.node("logits", Op::Reshape { shape: vec![0, -1] }, &[&last]);
    b.g.outputs.push(logits);
    b.g.validate()?;
    b.g.infer_shapes(1)?;
    Ok(b.g)
}

fn conv_attrs(w: &Window, groups: usize) -> ConvAttrs {
    ConvAttrs {
        kernel: w.kernel,
        strides: w.strides,
        pads: w.pads,
        dilations: w.dilations,
        groups,
        auto_pad: AutoPad::NotSet,
    }
}

fn pool_attrs(w: &Window, count_include_pad: bool) -> PoolAttrs {
    PoolAttrs {
        kernel: w.kernel,
        strides: w.strides,
        pads: w.pads,
        dilations: w.dilations,
        ceil_mode: false,
        count_include_pad,
        auto_pad: AutoPad::NotSet,
    }
}

struct Builder {
    g: Graph,
    n: usize,
}

impl Builder {
    /// A fresh name `{tag}.{what}{n}`.
    fn fresh(&mut self, tag: &str, what: &str) -> String {
        self.n += 1;
        format!("{tag}.{what}{}", self.n)
    }

    fn node(&mut self, tag: &str, op: Op, inputs: &[&str]) -> String {
        let name = if tag == "logits" {
            tag.to_string()
        } else {
            self.fresh(tag, op.name())
        };
        self.g.nodes.push(Node::new(name.clone(), op, inputs));
        name
    }

    /// A rank-0 constant.
    fn scalar(&mut self, tag: &str, what: &str, v: f32) -> String {
        let name = self.fresh(tag, what);
        // A rank-0 tensor of one element always builds.
        if let Ok(t) = from_vec(&[], vec![v]) {
            self.g.weights.insert(name.clone(), t);
        }
        name
    }

    /// `QuantizeLinear → DequantizeLinear` of `x` with `p` (int8, per tensor).
    fn qdq(&mut self, x: &str, p: QParams, tag: &str) -> String {
        let s = self.scalar(tag, "scale", p.scale);
        let z = self.scalar(tag, "zero_point", p.zero_point as f32);
        let q = self.node(
            tag,
            Op::QuantizeLinear {
                axis: 1,
                to: DType::I8,
            },
            &[x, &s, &z],
        );
        self.node(
            tag,
            Op::DequantizeLinear {
                axis: 1,
                from: DType::I8,
            },
            &[&q, &s, &z],
        )
    }

    /// `Clip` to the real values of codes `lo..=hi` of `p`.
    fn clip(&mut self, tag: &str, x: &str, p: QParams, lo: i8, hi: i8) -> String {
        if lo == i8::MIN && hi == i8::MAX {
            return x.to_string();
        }
        let (min, max) = (p.dequantize(lo), p.dequantize(hi));
        self.node(tag, Op::Clip { min, max }, &[x])
    }

    /// An int8 weight behind a per-output-channel `DequantizeLinear` (axis 0, zero points 0).
    fn dequantized_weight(
        &mut self,
        tag: &str,
        shape: &[usize],
        data: &[i8],
        scales: &[f32],
    ) -> Result<String> {
        let w = self.fresh(tag, "weight_int8");
        self.g.weights.insert(
            w.clone(),
            from_vec(shape, data.iter().map(|&v| v as f32).collect())?,
        );
        self.per_axis(tag, &w, scales, DType::I8)
    }

    /// An int32 bias behind a per-channel `DequantizeLinear` with `scales`.
    fn dequantized_bias(&mut self, tag: &str, bias: &[i32], scales: &[f32]) -> Result<String> {
        if let Some(b) = bias
            .iter()
            .find(|b| i64::from(**b).abs() > crate::tensor::F32_EXACT_INT)
        {
            return Err(Error::Invalid(format!(
                "`{tag}`: an int32 bias of {b} cannot be carried exactly (above 2^24)"
            )));
        }
        let w = self.fresh(tag, "bias_int32");
        self.g.weights.insert(
            w.clone(),
            from_vec(&[bias.len()], bias.iter().map(|&v| v as f32).collect())?,
        );
        self.per_axis(tag, &w, scales, DType::I32)
    }

    fn per_axis(&mut self, tag: &str, x: &str, scales: &[f32], from: DType) -> Result<String> {
        let s = self.fresh(tag, "scales");
        self.g
            .weights
            .insert(s.clone(), from_vec(&[scales.len()], scales.to_vec())?);
        let z = self.fresh(tag, "zero_points");
        self.g.weights.insert(
            z.clone(),
            from_vec(&[scales.len()], vec![0.0; scales.len()])?,
        );
        Ok(self.node(tag, Op::DequantizeLinear { axis: 0, from }, &[x, &s, &z]))
    }
}

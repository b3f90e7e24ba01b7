//! QDQ fusion: the `DequantizeLinear → Conv/Gemm → QuantizeLinear` pattern of a statically
//! quantized ONNX graph (what onnxruntime's quantizer and Lithe's own QDQ export write) becomes
//! one `QLinearConv` on the int8 codes, so the plan runs it on the int8 kernel instead of
//! dequantizing the weights and computing in f32.
//!
//! A node is fused when:
//! - its input `x` comes from `DequantizeLinear(xq, sx, zx)` of int8/uint8 codes with a scalar
//!   scale, and its weight from `DequantizeLinear(wq, sw, zw)` of a constant int8/uint8 weight
//!   with one scale or one per output channel;
//! - its bias is absent, a constant f32, or `DequantizeLinear` of a constant int32 bias;
//! - its only reader is `QuantizeLinear(y, sy, zy)` to int8/uint8 with a scalar scale, and it is
//!   not a graph output;
//! - a Gemm has `alpha = 1`, `beta = 1` (or no bias) and no `transA`.
//!
//! The bias is carried as `round(b / (sx · sw[c]))` in int32 (exact when the bias was quantized
//! with that scale, as QDQ exporters do; a fusion whose bias would not fit 2^24 is skipped). A
//! Gemm becomes a 1×1 `QLinearConv` between `Reshape [0, −1, 1, 1]` and `Flatten`. The fused
//! graph computes the sums exactly in integers where the unfused one rounded f32 products, so
//! an output can differ from the unfused graph's by one quantization step (onnxruntime's own
//! QDQ fusion does the same); the tests check the classes agree. Nodes left without readers
//! (the weight and bias `DequantizeLinear`s) are removed.

use crate::Result;
use crate::graph::{ConvAttrs, Graph, Node, Op};
use crate::tensor::{self, DType, Tensor};
use std::collections::{HashMap, HashSet};

/// A constant (weight) input of `g`.
fn constant<'a>(g: &'a Graph, name: &str) -> Option<&'a Tensor> {
    if name.is_empty() {
        None
    } else {
        g.weights.get(name)
    }
}

/// A constant that is absent or a single value.
fn scalar_or_absent(g: &Graph, name: Option<&String>) -> bool {
    match name.filter(|s| !s.is_empty()) {
        None => true,
        Some(n) => constant(g, n).is_some_and(|t| t.len() == 1),
    }
}

struct Dq<'a> {
    node: &'a Node,
    axis: i64,
    from: DType,
}

fn dq_of<'a>(g: &'a Graph, producer: &HashMap<&str, usize>, value: &str) -> Option<Dq<'a>> {
    let n = &g.nodes[*producer.get(value)?];
    match n.op {
        Op::DequantizeLinear { axis, from } => Some(Dq {
            node: n,
            axis,
            from,
        }),
        _ => None,
    }
}

/// One fusion found in the graph: the node to replace, the QuantizeLinear to drop, and the nodes
/// and weights that replace them.
struct Fusion {
    at: usize,
    drop: usize,
    nodes: Vec<Node>,
    weights: Vec<(String, Tensor)>,
}

/// Fuses every matching `DequantizeLinear → Conv/Gemm → QuantizeLinear`; returns how many.
pub fn fuse_qdq(g: &mut Graph) -> Result<usize> {
    let mut fused = 0;
    // One pass finds non-overlapping fusions (each touches its own Conv/Gemm and Q node).
    let fusions = find(g)?;
    if fusions.is_empty() {
        return Ok(0);
    }
    let mut replace: HashMap<usize, Vec<Node>> = HashMap::new();
    let mut drop: HashSet<usize> = HashSet::new();
    for f in fusions {
        for (k, v) in f.weights {
            g.weights.insert(k, v);
        }
        replace.insert(f.at, f.nodes);
        drop.insert(f.drop);
        fused += 1;
    }
    let old = std::mem::take(&mut g.nodes);
    for (i, n) in old.into_iter().enumerate() {
        if drop.contains(&i) {
            continue;
        }
        match replace.remove(&i) {
            Some(new) => g.nodes.extend(new),
            None => g.nodes.push(n),
        }
    }
    remove_dead(g);
    Ok(fused)
}

fn find(g: &Graph) -> Result<Vec<Fusion>> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        for o in &n.outputs {
            producer.insert(o.as_str(), i);
        }
        for x in n.inputs.iter().filter(|s| !s.is_empty()) {
            readers.entry(x.as_str()).or_default().push(i);
        }
    }
    let outputs: HashSet<&str> = g.outputs.iter().map(String::as_str).collect();
    let mut out = Vec::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let (attrs, gemm) = match &n.op {
            Op::Conv(a) => (a.clone(), None),
            Op::Gemm(a) if a.alpha == 1.0 && !a.trans_a => (ConvAttrs::new([1, 1]), Some(a)),
            _ => continue,
        };
        let Some(y) = n.outputs.first() else {
            continue;
        };
        if outputs.contains(y.as_str()) {
            continue;
        }
        let Some(&[q]) = readers.get(y.as_str()).map(Vec::as_slice) else {
            continue;
        };
        let qn = &g.nodes[q];
        let Op::QuantizeLinear { to: ty, .. } = qn.op else {
            continue;
        };
        if !matches!(ty, DType::I8 | DType::U8)
            || qn.inputs.first() != Some(y)
            || constant(g, &qn.inputs[1]).is_none_or(|t| t.len() != 1)
            || !scalar_or_absent(g, qn.inputs.get(2))
        {
            continue;
        }
        let (Some(x), Some(w)) = (
            dq_of(g, &producer, &n.inputs[0]),
            n.inputs.get(1).and_then(|w| dq_of(g, &producer, w)),
        ) else {
            continue;
        };
        if !matches!(x.from, DType::I8 | DType::U8)
            || !matches!(w.from, DType::I8 | DType::U8)
            || constant(g, &x.node.inputs[1]).is_none_or(|t| t.len() != 1)
            || !scalar_or_absent(g, x.node.inputs.get(2))
        {
            continue;
        }
        let Some(wq) = constant(g, &w.node.inputs[0]) else {
            continue;
        };
        let Some(sw) = constant(g, &w.node.inputs[1]) else {
            continue;
        };
        let zw = match w.node.inputs.get(2).filter(|s| !s.is_empty()) {
            None => None,
            Some(z) => match constant(g, z) {
                Some(t) => Some(t),
                None => continue,
            },
        };
        // The weight as [M, C, kh, kw] (a Gemm's as [N, K, 1, 1]), with its channel axis.
        let (w4, axis0) = match gemm {
            None => {
                if wq.ndim() != 4 {
                    continue;
                }
                (wq.clone(), 0usize)
            }
            Some(a) => {
                if wq.ndim() != 2 {
                    continue;
                }
                let t = if a.trans_b {
                    wq.clone()
                } else {
                    wq.t().to_owned()
                };
                let (r, c) = (t.shape()[0], t.shape()[1]);
                let data = tensor::to_contiguous(&t).into_owned();
                (
                    tensor::from_vec(&[r, c, 1, 1], data)?,
                    if a.trans_b { 0 } else { 1 },
                )
            }
        };
        let m = w4.shape()[0];
        // Per-channel scales must lie along the output channel.
        let w_axis = if w.axis < 0 {
            w.axis + wq.ndim() as i64
        } else {
            w.axis
        };
        if sw.len() != 1 && (sw.len() != m || w_axis != axis0 as i64) {
            continue;
        }
        if zw.is_some_and(|z| z.len() != 1 && z.len() != sw.len()) {
            continue;
        }
        // The bias in int32 on the accumulator's scale sx·sw[c].
        let sx =
            constant(g, &x.node.inputs[1]).map_or(1.0, |t| t.iter().next().copied().unwrap_or(1.0));
        let sws: Vec<f32> = sw.iter().copied().collect();
        let bias_f: Option<Vec<f32>> = match n.inputs.get(2).filter(|s| !s.is_empty()) {
            None => None,
            Some(b) => {
                if gemm.is_some_and(|a| a.beta != 1.0) {
                    continue;
                }
                match (constant(g, b), dq_of(g, &producer, b)) {
                    (Some(t), _) if t.len() == m => Some(t.iter().copied().collect()),
                    (None, Some(d)) if d.from == DType::I32 => {
                        let (Some(bq), Some(sb)) = (
                            constant(g, &d.node.inputs[0]),
                            constant(g, &d.node.inputs[1]),
                        ) else {
                            continue;
                        };
                        let zb = d
                            .node
                            .inputs
                            .get(2)
                            .filter(|s| !s.is_empty())
                            .and_then(|z| constant(g, z));
                        if bq.len() != m || (sb.len() != 1 && sb.len() != m) {
                            continue;
                        }
                        if zb.is_some_and(|z| z.len() != 1 && z.len() != m) {
                            continue;
                        }
                        let pick = |t: &Tensor, c: usize| -> f32 {
                            let v: Vec<f32> = t.iter().copied().collect();
                            v[if v.len() == 1 { 0 } else { c }]
                        };
                        // As DequantizeLinear computes it.
                        let bqv: Vec<f32> = bq.iter().copied().collect();
                        Some(
                            (0..m)
                                .map(|c| (bqv[c] - zb.map_or(0.0, |z| pick(z, c))) * pick(sb, c))
                                .collect(),
                        )
                    }
                    _ => continue,
                }
            }
        };
        let bias_q: Option<Vec<f32>> = match bias_f {
            None => None,
            Some(b) => {
                let q: Vec<f64> = b
                    .iter()
                    .enumerate()
                    .map(|(c, &v)| {
                        let s = sx * sws[if sws.len() == 1 { 0 } else { c }];
                        (f64::from(v) / f64::from(s)).round_ties_even()
                    })
                    .collect();
                if q.iter()
                    .any(|v| !v.is_finite() || v.abs() > tensor::F32_EXACT_INT as f64)
                {
                    continue;
                }
                Some(q.into_iter().map(|v| v as f32).collect())
            }
        };
        let tag = format!("{}__qdq", n.name);
        let mut weights = Vec::new();
        let w_name = if gemm.is_some() {
            let name = format!("{tag}.weight");
            weights.push((name.clone(), w4));
            name
        } else {
            w.node.inputs[0].clone()
        };
        let b_name = match bias_q {
            None => String::new(),
            Some(b) => {
                let name = format!("{tag}.bias");
                weights.push((name.clone(), tensor::from_vec(&[m], b)?));
                name
            }
        };
        let opt = |node: &Node, k: usize| node.inputs.get(k).cloned().unwrap_or_default();
        let xq = x.node.inputs[0].clone();
        let yq = qn.outputs[0].clone();
        let conv_in = if gemm.is_some() {
            format!("{tag}.x4")
        } else {
            xq.clone()
        };
        let conv_out = if gemm.is_some() {
            format!("{tag}.y4")
        } else {
            yq.clone()
        };
        let mut nodes = Vec::new();
        if gemm.is_some() {
            nodes.push(Node {
                name: format!("{tag}.reshape"),
                op: Op::Reshape {
                    shape: vec![0, -1, 1, 1],
                },
                inputs: vec![xq.clone()],
                outputs: vec![conv_in.clone()],
            });
        }
        nodes.push(Node {
            name: tag.clone(),
            op: Op::QLinearConv {
                conv: attrs,
                x: x.from,
                w: w.from,
                y: ty,
            },
            inputs: vec![
                conv_in,
                x.node.inputs[1].clone(),
                opt(x.node, 2),
                w_name,
                w.node.inputs[1].clone(),
                opt(w.node, 2),
                qn.inputs[1].clone(),
                opt(qn, 2),
                b_name,
            ],
            outputs: vec![conv_out.clone()],
        });
        if gemm.is_some() {
            nodes.push(Node {
                name: format!("{tag}.flatten"),
                op: Op::Flatten { axis: 1 },
                inputs: vec![conv_out],
                outputs: vec![yq],
            });
        }
        // A trailing empty optional input is dropped (no bias).
        if let Some(last) = nodes
            .iter_mut()
            .find(|n| matches!(n.op, Op::QLinearConv { .. }))
            && last.inputs.last().is_some_and(String::is_empty)
        {
            last.inputs.pop();
        }
        out.push(Fusion {
            at: i,
            drop: q,
            nodes,
            weights,
        });
    }
    Ok(out)
}

/// Removes nodes none of whose outputs is read or is a graph output, and weights nothing reads,
/// until none is left.
fn remove_dead(g: &mut Graph) {
    loop {
        let mut read: HashSet<String> = g.outputs.iter().cloned().collect();
        for n in &g.nodes {
            read.extend(n.inputs.iter().filter(|s| !s.is_empty()).cloned());
        }
        let before = g.nodes.len();
        g.nodes
            .retain(|n| n.outputs.iter().any(|o| read.contains(o)));
        if g.nodes.len() == before {
            g.weights.retain(|k, _| read.contains(k));
            return;
        }
    }
}

//! Layer pruning: removing a block whose input and output shapes match (it becomes the
//! identity), and merging two adjacent dense layers into one.
//!
//! Merging `Gemm₁ → (activations) → Gemm₂` computes, with both weights read as `[out, in]`,
//! `W = α₂α₁ · W₂W₁` and `b = α₂β₁ · W₂b₁ + β₂b₂` (in f64). Without an activation in between
//! this is exact up to rounding; activations in between are dropped, which changes the
//! function, so fine-tune afterwards.

use crate::graph::{GemmAttrs, Graph, Op};
use crate::tensor::Tensor;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Knobs of the `remove_block` pass: the first and last node of the block, in graph order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockSpec {
    /// First node of the block; its first input is the block's input.
    pub first: String,
    /// Last node of the block; its output is the block's output.
    pub last: String,
}

/// Knobs of the `merge_linear` pass: two Gemms, the second reading the first (possibly through
/// elementwise activations).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MergeSpec {
    /// The first Gemm.
    pub first: String,
    /// The second Gemm; the merged layer keeps its name and output.
    pub second: String,
}

/// What a layer pass did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerChange {
    /// Nodes removed from the graph.
    pub removed: Vec<String>,
    /// Activations dropped between merged Gemms (the merge is exact when empty).
    pub dropped_activations: Vec<String>,
}

fn position(g: &Graph, name: &str, pass: &str) -> Result<usize> {
    g.nodes
        .iter()
        .position(|n| n.name == name)
        .ok_or_else(|| Error::Invalid(format!("{pass}: unknown node `{name}`")))
}

fn drop_unread_weights(g: &mut Graph, candidates: &[String]) {
    for w in candidates {
        if !g.nodes.iter().any(|n| n.inputs.contains(w)) && !g.outputs.contains(w) {
            g.weights.remove(w);
        }
    }
}

/// Removes the nodes from `spec.first` to `spec.last` (inclusive, in graph order) and connects
/// the readers of the block's output to its input. The block must be self-contained (its
/// nodes read only its input, weights and each other; nothing outside reads any value it
/// makes except the output) and its output must have its input's shape.
pub fn remove_block(g: &mut Graph, spec: &BlockSpec) -> Result<LayerChange> {
    const P: &str = "remove_block";
    g.validate()?;
    let (i, j) = (position(g, &spec.first, P)?, position(g, &spec.last, P)?);
    if i > j {
        return Err(Error::Invalid(format!(
            "{P}: `{}` comes after `{}` in the graph",
            spec.first, spec.last
        )));
    }
    let input = g.nodes[i].inputs[0].clone();
    if g.weights.contains_key(&input) {
        return Err(Error::Invalid(format!(
            "{P}: the block's input `{input}` is a weight"
        )));
    }
    if g.nodes[j].outputs.len() != 1 {
        return Err(Error::Invalid(format!(
            "{P}: `{}` has more than one output",
            spec.last
        )));
    }
    let output = g.nodes[j].outputs[0].clone();
    let inside: HashSet<String> = g.nodes[i..=j]
        .iter()
        .flat_map(|n| n.outputs.iter().cloned())
        .collect();
    for n in &g.nodes[i..=j] {
        for v in n.inputs.iter().filter(|v| !v.is_empty()) {
            if v != &input && !inside.contains(v) && !g.weights.contains_key(v) {
                return Err(Error::Invalid(format!(
                    "{P}: `{}` reads `{v}`, which comes from outside the block",
                    n.name
                )));
            }
        }
    }
    for v in inside.iter().filter(|v| **v != output) {
        let outside_reader = g.nodes[..i]
            .iter()
            .chain(&g.nodes[j + 1..])
            .find(|n| n.inputs.contains(v));
        if let Some(n) = outside_reader {
            return Err(Error::Invalid(format!(
                "{P}: `{}` outside the block reads `{v}` from inside it",
                n.name
            )));
        }
        if g.outputs.contains(v) {
            return Err(Error::Invalid(format!(
                "{P}: `{v}` inside the block is a graph output"
            )));
        }
    }
    let shapes = g.infer_shapes(1)?;
    let (si, so) = (shapes.get(&input), shapes.get(&output));
    if si.is_none() || si != so {
        return Err(Error::Invalid(format!(
            "{P}: the block maps shape {:?} to {:?}; they must match",
            si.cloned().unwrap_or_default(),
            so.cloned().unwrap_or_default()
        )));
    }
    let removed: Vec<_> = g.nodes.drain(i..=j).collect();
    for n in &mut g.nodes {
        for v in &mut n.inputs {
            if *v == output {
                *v = input.clone();
            }
        }
    }
    for o in &mut g.outputs {
        if *o == output {
            *o = input.clone();
        }
    }
    let weights: Vec<String> = removed
        .iter()
        .flat_map(|n| n.inputs.iter().cloned())
        .filter(|v| g.weights.contains_key(v))
        .collect();
    drop_unread_weights(g, &weights);
    g.validate()?;
    Ok(LayerChange {
        removed: removed.into_iter().map(|n| n.name).collect(),
        dropped_activations: Vec::new(),
    })
}

/// A Gemm weight as row-major `[out, in]` f64, with its attributes.
fn dense(g: &Graph, idx: usize, pass: &str) -> Result<(GemmAttrs, usize, usize, Vec<f64>)> {
    let n = &g.nodes[idx];
    let Op::Gemm(a) = &n.op else {
        return Err(Error::Invalid(format!(
            "{pass}: `{}` is not a Gemm",
            n.name
        )));
    };
    let w = n
        .inputs
        .get(1)
        .and_then(|w| g.weights.get(w))
        .filter(|w| w.ndim() == 2)
        .ok_or_else(|| Error::Invalid(format!("{pass}: `{}` has no stored 2-D weight", n.name)))?;
    if a.trans_a {
        return Err(Error::Invalid(format!(
            "{pass}: `{}` transposes its input (trans_a)",
            n.name
        )));
    }
    let t: Tensor = if a.trans_b {
        w.clone()
    } else {
        w.t().to_owned()
    };
    let (out, inp) = (t.shape()[0], t.shape()[1]);
    Ok((
        a.clone(),
        out,
        inp,
        t.iter().map(|&v| f64::from(v)).collect(),
    ))
}

/// The bias of Gemm node `idx` expanded to `len` values (zeros when absent).
fn bias(g: &Graph, idx: usize, len: usize, pass: &str) -> Result<Vec<f64>> {
    let n = &g.nodes[idx];
    let Some(name) = n.inputs.get(2).filter(|s| !s.is_empty()) else {
        return Ok(vec![0.0; len]);
    };
    let b = g.weights.get(name).ok_or_else(|| {
        Error::Invalid(format!(
            "{pass}: bias `{name}` of `{}` is not stored",
            n.name
        ))
    })?;
    match b.len() {
        1 => Ok(vec![
            f64::from(b.iter().next().copied().unwrap_or(0.0));
            len
        ]),
        l if l == len => Ok(b.iter().map(|&v| f64::from(v)).collect()),
        l => Err(Error::Invalid(format!(
            "{pass}: bias `{name}` has {l} values for {len} outputs"
        ))),
    }
}

/// Merges Gemm `spec.first` into Gemm `spec.second`, which reads it directly or through a chain
/// of elementwise activations (Relu, Clip, Sigmoid, Tanh, Dropout) that nothing else reads.
pub fn merge_linear(g: &mut Graph, spec: &MergeSpec) -> Result<LayerChange> {
    const P: &str = "merge_linear";
    g.validate()?;
    let (ia, ib) = (position(g, &spec.first, P)?, position(g, &spec.second, P)?);
    let (a1, h, m, w1) = dense(g, ia, P)?;
    let (a2, n, h2, w2) = dense(g, ib, P)?;
    if h != h2 {
        return Err(Error::Invalid(format!(
            "{P}: `{}` has {h} outputs but `{}` takes {h2} inputs",
            spec.first, spec.second
        )));
    }
    // Walk from the first Gemm's output to the second's input.
    let mut chain: Vec<usize> = Vec::new();
    let mut value = g.nodes[ia].outputs[0].clone();
    loop {
        if g.outputs.contains(&value) {
            return Err(Error::Invalid(format!(
                "{P}: `{value}` between the two Gemms is a graph output"
            )));
        }
        let readers: Vec<usize> = (0..g.nodes.len())
            .filter(|&k| g.nodes[k].inputs.contains(&value))
            .collect();
        if readers.len() != 1 {
            return Err(Error::Invalid(format!(
                "{P}: `{value}` has {} readers; the two Gemms must form a chain",
                readers.len()
            )));
        }
        let r = readers[0];
        if r == ib {
            if g.nodes[ib].inputs[0] != value {
                return Err(Error::Invalid(format!(
                    "{P}: `{}` reads `{value}` as something other than its input",
                    spec.second
                )));
            }
            break;
        }
        let node = &g.nodes[r];
        let elementwise = matches!(
            node.op,
            Op::Relu | Op::Clip { .. } | Op::Sigmoid | Op::Tanh | Op::Dropout { .. }
        );
        if !elementwise || node.outputs.len() != 1 {
            return Err(Error::Invalid(format!(
                "{P}: `{}` ({}) sits between `{}` and `{}`; only activations may",
                node.name,
                node.op.name(),
                spec.first,
                spec.second
            )));
        }
        chain.push(r);
        value = node.outputs[0].clone();
    }
    let w2_name = g.nodes[ib].inputs[1].clone();
    if g.nodes
        .iter()
        .filter(|x| x.inputs.contains(&w2_name))
        .count()
        != 1
    {
        return Err(Error::Invalid(format!(
            "{P}: weight `{w2_name}` is shared with another node"
        )));
    }
    let merged = n
        .checked_mul(m)
        .filter(|&e| e <= crate::graph::limits::MAX_TENSOR_ELEMENTS)
        .ok_or(Error::Limit {
            what: "merged weight element count",
            got: (n as u64).saturating_mul(m as u64),
            limit: crate::graph::limits::MAX_TENSOR_ELEMENTS as u64,
        })?;
    let b1 = bias(g, ia, h, P)?;
    let b2 = bias(g, ib, n, P)?;
    let (al1, be1) = (f64::from(a1.alpha), f64::from(a1.beta));
    let (al2, be2) = (f64::from(a2.alpha), f64::from(a2.beta));
    let mut w = vec![0f32; merged];
    let mut b = vec![0f32; n];
    let mut row = vec![0f64; m];
    for o in 0..n {
        row.iter_mut().for_each(|v| *v = 0.0);
        let mut acc_b = 0.0;
        for k in 0..h {
            let c = w2[o * h + k];
            if c != 0.0 {
                let src = &w1[k * m..(k + 1) * m];
                for (r, s) in row.iter_mut().zip(src) {
                    *r += c * s;
                }
            }
            acc_b += c * b1[k];
        }
        for (dst, r) in w[o * m..(o + 1) * m].iter_mut().zip(&row) {
            *dst = (al2 * al1 * r) as f32;
        }
        b[o] = (al2 * be1 * acc_b + be2 * b2[o]) as f32;
    }
    let wt = crate::tensor::from_vec(&[n, m], w)?;
    let bt = crate::tensor::from_vec(&[n], b)?;
    let bias_name = match g.nodes[ib].inputs.get(2).filter(|s| !s.is_empty()) {
        Some(name) if g.nodes.iter().filter(|x| x.inputs.contains(name)).count() == 1 => {
            name.clone()
        }
        _ => {
            let base = format!("{}.merged_bias", spec.second);
            if g.weights.contains_key(&base) || g.nodes.iter().any(|x| x.outputs.contains(&base)) {
                return Err(Error::Invalid(format!(
                    "{P}: name `{base}` already exists in the graph"
                )));
            }
            base
        }
    };
    let x = g.nodes[ia].inputs[0].clone();
    {
        let second = &mut g.nodes[ib];
        second.op = Op::Gemm(GemmAttrs {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: true,
        });
        second.inputs = vec![x, w2_name.clone(), bias_name.clone()];
    }
    g.weights.insert(w2_name, wt);
    g.weights.insert(bias_name, bt);
    let mut gone: Vec<usize> = chain.clone();
    gone.push(ia);
    gone.sort_unstable();
    let mut removed = Vec::new();
    let mut weights = Vec::new();
    for &k in gone.iter().rev() {
        let node = g.nodes.remove(k);
        weights.extend(
            node.inputs
                .iter()
                .filter(|v| g.weights.contains_key(*v))
                .cloned(),
        );
        removed.push(node.name);
    }
    removed.reverse();
    drop_unread_weights(g, &weights);
    g.validate()?;
    let dropped_activations: Vec<String> = removed
        .iter()
        .filter(|name| **name != spec.first)
        .cloned()
        .collect();
    Ok(LayerChange {
        removed,
        dropped_activations,
    })
}

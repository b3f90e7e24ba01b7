//! The reference interpreter: runs a [`Graph`] node by node with the reference ops, for
//! inference and for training (keeping what the backward pass needs).

use crate::graph::{Dim, Graph};
use crate::ops::{self, Mode, Saved};
use crate::rng::Rng;
use crate::tensor::Tensor;
use crate::{Error, Result};
use std::collections::HashMap;

/// Checks runtime inputs against the graph's declared inputs.
pub(crate) fn check_inputs(g: &Graph, inputs: &[(&str, &Tensor)]) -> Result<()> {
    for v in &g.inputs {
        let Some((_, t)) = inputs.iter().find(|(n, _)| *n == v.name) else {
            return Err(Error::Input {
                name: v.name.clone(),
                detail: "not provided".into(),
            });
        };
        let ok = t.ndim() == v.shape.len()
            && v.shape.iter().zip(t.shape()).all(|(d, &s)| match d {
                Dim::Fixed(n) => *n == s,
                Dim::Sym(_) => true,
            });
        if !ok {
            return Err(Error::Input {
                name: v.name.clone(),
                detail: format!(
                    "shape {:?} does not match the declared {:?}",
                    t.shape(),
                    v.shape
                ),
            });
        }
    }
    Ok(())
}

/// How many times each value is read (graph outputs count once more so they are never freed).
pub(crate) fn use_counts(g: &Graph) -> HashMap<&str, usize> {
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for n in &g.nodes {
        for i in n.inputs.iter().filter(|s| !s.is_empty()) {
            *uses.entry(i.as_str()).or_default() += 1;
        }
    }
    for o in &g.outputs {
        *uses.entry(o.as_str()).or_default() += 1;
    }
    uses
}

/// The tensors a node reads, looked up by name; an empty name (absent optional input) is `None`.
fn gather<'a>(
    n: &crate::graph::Node,
    lookup: impl Fn(&str) -> Option<&'a Tensor>,
) -> Vec<Option<&'a Tensor>> {
    n.inputs
        .iter()
        .map(|i| if i.is_empty() { None } else { lookup(i) })
        .collect()
}

/// Runs the graph in inference mode and returns its outputs in order. Intermediate values are
/// dropped as soon as their last reader has run.
pub fn run(g: &Graph, inputs: &[(&str, &Tensor)]) -> Result<Vec<Tensor>> {
    run_nodes(g, inputs, |_, n, ins| {
        Ok(ops::forward(n, ins, Mode::Eval)?.0)
    })
}

/// The inference loop shared by [`run`] and [`crate::plan::Plan::run`]: checks the inputs, calls
/// `step(index, node, inputs)` for every node in order, frees each value after its last reader
/// and returns the graph outputs.
pub(crate) fn run_nodes(
    g: &Graph,
    inputs: &[(&str, &Tensor)],
    mut step: impl FnMut(usize, &crate::graph::Node, &[Option<&Tensor>]) -> Result<Vec<Tensor>>,
) -> Result<Vec<Tensor>> {
    check_inputs(g, inputs)?;
    let mut uses = use_counts(g);
    let mut vals: HashMap<&str, Tensor> = HashMap::new();
    for (idx, n) in g.nodes.iter().enumerate() {
        let outs = {
            let ins = gather(n, |i| {
                vals.get(i)
                    .or_else(|| g.weights.get(i))
                    .or_else(|| inputs.iter().find(|(k, _)| *k == i).map(|(_, t)| *t))
            });
            step(idx, n, &ins)?
        };
        for i in n.inputs.iter().filter(|s| !s.is_empty()) {
            if let Some(u) = uses.get_mut(i.as_str()) {
                *u -= 1;
                if *u == 0 {
                    vals.remove(i.as_str());
                }
            }
        }
        for (name, t) in n.outputs.iter().zip(outs) {
            vals.insert(name.as_str(), t);
        }
    }
    g.outputs
        .iter()
        .map(|o| {
            vals.remove(o.as_str())
                .or_else(|| g.weights.get(o).cloned())
                .or_else(|| {
                    inputs
                        .iter()
                        .find(|(k, _)| k == o)
                        .map(|(_, t)| (*t).clone())
                })
                .ok_or_else(|| Error::Graph(format!("output `{o}` was not computed")))
        })
        .collect()
}

/// Everything a training forward pass keeps for the backward pass.
pub struct Trace {
    /// Every activation by name (inputs included).
    pub values: HashMap<String, Tensor>,
    /// Per-node saved state, in node order.
    pub saved: Vec<Saved>,
}

/// Runs the graph in training mode and keeps every activation.
pub fn forward_train(g: &Graph, inputs: &[(&str, &Tensor)], rng: &mut Rng) -> Result<Trace> {
    check_inputs(g, inputs)?;
    let mut values: HashMap<String, Tensor> = inputs
        .iter()
        .map(|(k, t)| (k.to_string(), (*t).clone()))
        .collect();
    let mut saved = Vec::with_capacity(g.nodes.len());
    for n in &g.nodes {
        let ins = gather(n, |i| values.get(i).or_else(|| g.weights.get(i)));
        let (outs, s) = ops::forward(n, &ins, Mode::Train(rng))?;
        saved.push(s);
        for (name, t) in n.outputs.iter().zip(outs) {
            values.insert(name.clone(), t);
        }
    }
    Ok(Trace { values, saved })
}

impl Trace {
    /// The value computed for `name`.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.values
            .get(name)
            .ok_or_else(|| Error::Graph(format!("value `{name}` was not computed")))
    }
}

/// Back-propagates `seeds` (gradients of some values, usually the loss w.r.t. the output) and
/// returns the gradient of every weight that received one.
pub fn backward(
    g: &Graph,
    trace: &Trace,
    seeds: HashMap<String, Tensor>,
) -> Result<HashMap<String, Tensor>> {
    let mut grads: HashMap<String, Tensor> = seeds;
    for (idx, n) in g.nodes.iter().enumerate().rev() {
        let Some(dy) = n.outputs.first().and_then(|o| grads.remove(o)) else {
            continue;
        };
        let ins = gather(n, |i| trace.values.get(i).or_else(|| g.weights.get(i)));
        let out = trace.get(&n.outputs[0])?;
        let gi = ops::backward(n, &ins, out, &trace.saved[idx], &dy)?;
        for (name, gr) in n.inputs.iter().zip(gi) {
            if let Some(gr) = gr
                && !name.is_empty()
            {
                match grads.get_mut(name) {
                    Some(acc) => *acc += &gr,
                    None => {
                        grads.insert(name.clone(), gr);
                    }
                }
            }
        }
    }
    grads.retain(|k, _| g.weights.contains_key(k));
    Ok(grads)
}

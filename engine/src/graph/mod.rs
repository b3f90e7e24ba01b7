//! The graph IR: named values flowing between typed nodes, weights kept by name.

pub mod fold;
mod op;
pub mod shape;

pub use op::{AutoPad, ConvAttrs, GemmAttrs, Op, PadAttrs, PadMode, PoolAttrs};

use crate::tensor::Tensor;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

/// One dimension of a graph input: fixed, or symbolic (the batch, usually).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dim {
    /// A known size.
    Fixed(usize),
    /// A size chosen at run time, with its symbolic name (`"N"`, `"batch_size"`...).
    Sym(String),
}

/// Name and shape of a graph input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValueInfo {
    /// Value name.
    pub name: String,
    /// Declared shape.
    pub shape: Vec<Dim>,
}

impl ValueInfo {
    /// Concrete shape with every symbolic dim set to `batch`.
    pub fn concrete(&self, batch: usize) -> Vec<usize> {
        self.shape
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => *n,
                Dim::Sym(_) => batch,
            })
            .collect()
    }
}

/// One operator application.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Unique node name.
    pub name: String,
    /// The operator.
    pub op: Op,
    /// Input value names in ONNX order; an empty string marks an absent optional input.
    pub inputs: Vec<String>,
    /// Output value names.
    pub outputs: Vec<String>,
}

impl Node {
    /// A node with one output named after the node.
    pub fn new(name: impl Into<String>, op: Op, inputs: &[&str]) -> Self {
        let name = name.into();
        Node {
            outputs: vec![name.clone()],
            name,
            op,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// A model: inputs, topologically ordered nodes, outputs and named weights.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    /// Model name.
    pub name: String,
    /// Runtime inputs (weights are not listed here).
    pub inputs: Vec<ValueInfo>,
    /// Names of the values the model returns.
    pub outputs: Vec<String>,
    /// Nodes in an order where every input is produced before use.
    pub nodes: Vec<Node>,
    /// Constant tensors by name: weights, biases, BatchNorm statistics.
    pub weights: BTreeMap<String, Tensor>,
    /// Free-form key/value metadata kept through import and export (`lithe.preprocess`...).
    pub metadata: BTreeMap<String, String>,
}

/// Limits enforced on every graph, documented so hostile files fail cleanly.
pub mod limits {
    /// Maximum number of nodes in a graph.
    pub const MAX_NODES: usize = 100_000;
    /// Maximum number of elements in one tensor (1 Gi elements = 4 GiB of f32).
    pub const MAX_TENSOR_ELEMENTS: usize = 1 << 28;
    /// Maximum rank of a tensor.
    pub const MAX_RANK: usize = 8;
}

impl Graph {
    /// Number of trainable parameters (elements of weights consumed as parameters).
    pub fn param_count(&self) -> usize {
        self.weights.values().map(|w| w.len()).sum()
    }

    /// The node that produces `value`, if any.
    pub fn producer(&self, value: &str) -> Option<&Node> {
        self.nodes
            .iter()
            .find(|n| n.outputs.iter().any(|o| o == value))
    }

    /// Checks that the graph is well formed: unique names, every input defined before use
    /// (weights, graph inputs or earlier outputs), arities respected, outputs produced, element
    /// types consistent ([`Graph::dtypes`]).
    /// Reorders nodes topologically when they are out of order; reports cycles.
    pub fn validate(&mut self) -> Result<()> {
        if self.nodes.len() > limits::MAX_NODES {
            return Err(Error::Limit {
                what: "node count",
                got: self.nodes.len() as u64,
                limit: limits::MAX_NODES as u64,
            });
        }
        let input_names: HashSet<&str> = self.inputs.iter().map(|v| v.name.as_str()).collect();
        let mut names = HashSet::new();
        let mut produced: HashMap<&str, usize> = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if !names.insert(n.name.as_str()) {
                return Err(Error::Graph(format!("duplicate node name `{}`", n.name)));
            }
            let (lo, hi) = n.op.arity();
            let present = n.inputs.len();
            if present < lo || present > hi {
                return Err(Error::Graph(format!(
                    "node `{}` ({}) has {} inputs, expects {}..={}",
                    n.name,
                    n.op.name(),
                    present,
                    lo,
                    if hi == usize::MAX {
                        "any".to_string()
                    } else {
                        hi.to_string()
                    }
                )));
            }
            if n.outputs.is_empty() {
                return Err(Error::Graph(format!("node `{}` has no output", n.name)));
            }
            for o in &n.outputs {
                if self.weights.contains_key(o) || input_names.contains(o.as_str()) {
                    return Err(Error::Graph(format!(
                        "node `{}` overwrites input or weight `{o}`",
                        n.name
                    )));
                }
                if produced.insert(o.as_str(), i).is_some() {
                    return Err(Error::Graph(format!("value `{o}` is produced twice")));
                }
            }
        }
        let sources: HashSet<&str> = self
            .inputs
            .iter()
            .map(|v| v.name.as_str())
            .chain(self.weights.keys().map(|s| s.as_str()))
            .collect();
        // Kahn's algorithm, stable with respect to the current order.
        let mut indeg = vec![0usize; self.nodes.len()];
        let mut users: Vec<Vec<usize>> = vec![Vec::new(); self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for inp in n.inputs.iter().filter(|s| !s.is_empty()) {
                if let Some(&p) = produced.get(inp.as_str()) {
                    indeg[i] += 1;
                    users[p].push(i);
                } else if !sources.contains(inp.as_str()) {
                    return Err(Error::Graph(format!(
                        "node `{}` reads `{inp}`, which is neither an input, a weight nor a node output",
                        n.name
                    )));
                }
            }
        }
        let mut ready: std::collections::BTreeSet<usize> =
            (0..self.nodes.len()).filter(|&i| indeg[i] == 0).collect();
        let mut order = Vec::with_capacity(self.nodes.len());
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for &u in &users[i] {
                indeg[u] -= 1;
                if indeg[u] == 0 {
                    ready.insert(u);
                }
            }
        }
        if order.len() != self.nodes.len() {
            let stuck: Vec<&str> = (0..self.nodes.len())
                .filter(|i| indeg[*i] > 0)
                .map(|i| self.nodes[i].name.as_str())
                .take(5)
                .collect();
            return Err(Error::Graph(format!(
                "the graph has a cycle through {}",
                stuck.join(", ")
            )));
        }
        for o in &self.outputs {
            if !produced.contains_key(o.as_str()) && !sources.contains(o.as_str()) {
                return Err(Error::Graph(format!(
                    "graph output `{o}` is never produced"
                )));
            }
        }
        if order.iter().enumerate().any(|(k, &i)| k != i) {
            let mut old: Vec<Option<Node>> = std::mem::take(&mut self.nodes)
                .into_iter()
                .map(Some)
                .collect();
            self.nodes = order.into_iter().filter_map(|i| old[i].take()).collect();
        }
        // Element types: every value is read as the type its producer (or, for inputs and
        // weights, every other reader) gives it.
        shape::dtypes(self)?;
        for (name, w) in &self.weights {
            if w.len() > limits::MAX_TENSOR_ELEMENTS {
                return Err(Error::Limit {
                    what: "weight element count",
                    got: w.len() as u64,
                    limit: limits::MAX_TENSOR_ELEMENTS as u64,
                });
            }
            if w.ndim() > limits::MAX_RANK {
                return Err(Error::Graph(format!(
                    "weight `{name}` has rank {} > {}",
                    w.ndim(),
                    limits::MAX_RANK
                )));
            }
        }
        Ok(())
    }

    /// Infers the shape of every value for a batch size, checking every node's constraints.
    pub fn infer_shapes(&self, batch: usize) -> Result<HashMap<String, Vec<usize>>> {
        shape::infer(self, batch)
    }

    /// The element type of every value (see [`shape::dtypes`]).
    pub fn dtypes(&self) -> Result<HashMap<String, crate::tensor::DType>> {
        shape::dtypes(self)
    }

    /// Names of weights that training may update (weights feeding a parameter slot of some node).
    pub fn trainable(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for n in &self.nodes {
            for &i in n.op.param_inputs() {
                if let Some(name) = n.inputs.get(i)
                    && !name.is_empty()
                    && self.weights.contains_key(name)
                    && !out.contains(name)
                {
                    out.push(name.clone());
                }
            }
        }
        out
    }
}

//! ModelProto → Graph: checks, unsupported-op listing, constants, per-op builders, Identity
//! folding, weights, validation.

use super::builders::{self, Built, NodeCtx, SymDims};
use super::proto::tensor_shape_proto::dimension::Value as DimValue;
use super::proto::type_proto::Value as TypeValue;
use super::proto::{GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto};
use super::tensor::{self, Const};
use super::{LIMITS, MAX_OPSET, MIN_OPSET};
use crate::graph::{Dim, Graph, Node, Op, ValueInfo};
use crate::tensor::DType;
use crate::{Error, Result};
use prost::Message;
use std::collections::{BTreeMap, HashMap, HashSet};

fn decode_err(detail: impl Into<String>) -> Error {
    Error::Decode {
        what: "ONNX model",
        detail: detail.into(),
    }
}

/// How many node names an unsupported-op entry quotes.
const NAMES_QUOTED: usize = 3;

pub(super) fn import(bytes: &[u8]) -> Result<Graph> {
    if bytes.len() > LIMITS.max_file_bytes {
        return Err(Error::Limit {
            what: "ONNX file",
            got: bytes.len() as u64,
            limit: LIMITS.max_file_bytes as u64,
        });
    }
    if bytes.is_empty() {
        return Err(decode_err("the file is empty"));
    }
    let mut model = ModelProto::decode(bytes)
        .map_err(|e| decode_err(format!("not a valid ONNX protobuf ({e})")))?;
    let mut graph = model
        .graph
        .take()
        .ok_or_else(|| decode_err("the file holds no graph; is it an ONNX model?"))?;
    if model.ir_version() < 3 {
        return Err(decode_err(format!(
            "IR version {} is not supported (3 or later is needed; 0 usually means this is not an ONNX file)",
            model.ir_version()
        )));
    }
    let opset = default_opset(&model)?;
    if graph.node.len() > LIMITS.max_nodes {
        return Err(Error::Limit {
            what: "node count",
            got: graph.node.len() as u64,
            limit: LIMITS.max_nodes as u64,
        });
    }
    check_supported(&graph)?;
    if !graph.sparse_initializer.is_empty() {
        return Err(decode_err("sparse initializers are not supported"));
    }
    let mut b = Importer {
        opset,
        ..Importer::default()
    };
    // Initializers are moved out, so each one's data exists once (decoded) at a time.
    b.initializers(std::mem::take(&mut graph.initializer))?;
    let inputs = b.inputs(&graph)?;
    for v in &inputs {
        for (k, shapes) in b.shapes.iter_mut().enumerate() {
            shapes.insert(v.name.clone(), v.concrete(k + 1));
        }
    }
    b.nodes(&graph)?;
    let outputs = b.outputs(&graph)?;
    let weights = b.weights(&outputs)?;
    let mut g = Graph {
        name: graph.name().to_string(),
        inputs,
        outputs,
        nodes: b.built,
        weights,
        metadata: model
            .metadata_props
            .iter()
            .map(|p| (p.key().to_string(), p.value().to_string()))
            .collect(),
    };
    g.validate()?;
    Ok(g)
}

/// The version of the default (`""` / `ai.onnx`) operator set, checked against the range.
fn default_opset(model: &ModelProto) -> Result<i64> {
    let v = model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain(), "" | "ai.onnx"))
        .map(|o| o.version())
        .ok_or_else(|| decode_err("the model imports no default-domain opset"))?;
    if !(MIN_OPSET..=MAX_OPSET).contains(&v) {
        return Err(decode_err(format!(
            "opset {v} is not supported (Lithe reads opsets {MIN_OPSET} to {MAX_OPSET})"
        )));
    }
    Ok(v)
}

fn op_label(n: &NodeProto) -> String {
    match n.domain() {
        "" | "ai.onnx" => n.op_type().to_string(),
        d => format!("{d}::{}", n.op_type()),
    }
}

fn is_supported(n: &NodeProto) -> bool {
    matches!(n.domain(), "" | "ai.onnx") && builders::lookup(n.op_type()).is_some()
}

/// Lists every unsupported op type, with its count and a few node names, in one error.
fn check_supported(graph: &GraphProto) -> Result<()> {
    let mut missing: BTreeMap<String, (usize, Vec<String>)> = BTreeMap::new();
    for (i, n) in graph
        .node
        .iter()
        .enumerate()
        .filter(|(_, n)| !is_supported(n))
    {
        let e = missing.entry(op_label(n)).or_default();
        e.0 += 1;
        if e.1.len() < NAMES_QUOTED {
            let name = if n.name().is_empty() {
                format!("#{i}")
            } else {
                n.name().to_string()
            };
            e.1.push(name);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::UnsupportedOps(
        missing
            .into_iter()
            .map(|(op, (count, names))| {
                let more = if count > names.len() { ", …" } else { "" };
                let noun = if count == 1 { "node" } else { "nodes" };
                format!("{op} ({count} {noun}: {}{more})", names.join(", "))
            })
            .collect(),
    ))
}

/// A declared graph input as a [`ValueInfo`] and its element type; only float, int8, uint8 and
/// int32 tensors with a shape are accepted (integer inputs only where a quantization op reads
/// them, which the node checks enforce).
fn value_info(v: &ValueInfoProto) -> Result<(ValueInfo, DType)> {
    let name = v.name();
    if name.is_empty() {
        return Err(decode_err("a graph input has no name"));
    }
    let Some(TypeValue::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err(decode_err(format!("input `{name}` is not a tensor")));
    };
    let Some(dtype) = tensor::dtype_of(t.elem_type()) else {
        return Err(decode_err(format!(
            "input `{name}` has element type #{}; Lithe models take float32 inputs (int8, uint8 \
             and int32 only where a quantization op reads them)",
            t.elem_type()
        )));
    };
    let shape = t
        .shape
        .as_ref()
        .ok_or_else(|| decode_err(format!("input `{name}` has no declared shape")))?;
    if shape.dim.len() > LIMITS.max_rank {
        return Err(Error::Limit {
            what: "input rank",
            got: shape.dim.len() as u64,
            limit: LIMITS.max_rank as u64,
        });
    }
    let mut dims = Vec::with_capacity(shape.dim.len());
    let mut fixed: Vec<i64> = Vec::new();
    for d in &shape.dim {
        match &d.value {
            Some(DimValue::DimValue(n)) => {
                fixed.push(*n);
                let (s, _) = tensor::checked_shape(&format!("input `{name}`"), &[*n])?;
                dims.push(Dim::Fixed(s.first().copied().unwrap_or(0)));
            }
            Some(DimValue::DimParam(p)) => dims.push(Dim::Sym(p.clone())),
            None => dims.push(Dim::Sym(String::new())),
        }
    }
    tensor::checked_shape(&format!("input `{name}`"), &fixed)?;
    Ok((
        ValueInfo {
            name: name.to_string(),
            shape: dims,
        },
        dtype,
    ))
}

/// Node order where producers come first (Kahn, stable); nodes in a cycle are appended in file
/// order so that validation reports the cycle.
fn topo_order(nodes: &[NodeProto]) -> Vec<usize> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            producer.entry(o.as_str()).or_insert(i);
        }
    }
    let mut indeg = vec![0usize; nodes.len()];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        for inp in n.input.iter() {
            if let Some(&p) = producer.get(inp.as_str())
                && p != i
                && let (Some(d), Some(u)) = (indeg.get_mut(i), users.get_mut(p))
            {
                *d += 1;
                u.push(i);
            }
        }
    }
    let mut ready: std::collections::BTreeSet<usize> =
        (0..nodes.len()).filter(|&i| indeg[i] == 0).collect();
    let mut order = Vec::with_capacity(nodes.len());
    let mut done = vec![false; nodes.len()];
    while let Some(i) = ready.pop_first() {
        order.push(i);
        done[i] = true;
        for &u in users.get(i).map(Vec::as_slice).unwrap_or(&[]) {
            if let Some(d) = indeg.get_mut(u) {
                *d = d.saturating_sub(1);
                if *d == 0 {
                    ready.insert(u);
                }
            }
        }
    }
    order.extend((0..nodes.len()).filter(|&i| !done[i]));
    order
}

#[derive(Default)]
struct Importer {
    opset: i64,
    /// Constants by value name.
    consts: HashMap<String, Const>,
    /// Names of the file's initializers.
    initializer_names: HashSet<String>,
    /// Identity outputs and the value they stand for.
    aliases: HashMap<String, String>,
    /// Outputs of nodes Lithe does not compute (BatchNorm statistics, Dropout mask, MaxPool
    /// indices): value → (node, op).
    dropped: HashMap<String, (String, &'static str)>,
    /// Every value name any node of the file reads.
    read_by_file: HashSet<String>,
    /// Node names taken so far.
    node_names: HashSet<String>,
    /// The graph's nodes.
    built: Vec<Node>,
    /// Value shapes inferred while building, with symbolic dims set to 1 and to 2 (a dim that
    /// differs between the two depends on the batch size).
    shapes: [HashMap<String, Vec<usize>>; 2],
    /// Integer constants folded from `Shape` whose elements stand for batch-dependent dims.
    sym: HashMap<String, SymDims>,
    /// Element types of graph inputs and node outputs (constants know their own).
    dtypes: HashMap<String, DType>,
}

impl Importer {
    /// The shape of a value at batch sizes 1 and 2, when known.
    fn shape_of(&self, name: &str) -> Option<[Vec<usize>; 2]> {
        if let Some(c) = self.consts.get(name) {
            return Some([c.shape.clone(), c.shape.clone()]);
        }
        Some([
            self.shapes[0].get(name)?.clone(),
            self.shapes[1].get(name)?.clone(),
        ])
    }

    /// The shapes of `node`'s inputs at the `k`-th probe batch size (0: batch 1, 1: batch 2),
    /// an absent optional input as `[]`; `None` when one is not known.
    fn input_shapes(&self, node: &Node, k: usize) -> Option<Vec<Vec<usize>>> {
        node.inputs
            .iter()
            .map(|i| {
                if i.is_empty() {
                    Some(Vec::new())
                } else {
                    self.shape_of(i).map(|[a, b]| if k == 0 { a } else { b })
                }
            })
            .collect()
    }

    /// Records the output shapes of a node just built, when they can be inferred (errors are
    /// left to validation and execution).
    fn record_shapes(&mut self, node: &Node) {
        for k in 0..2 {
            let ins = self.input_shapes(node, k);
            let Some(ins) = ins else { return };
            let refs: Vec<Option<&[usize]>> = node
                .inputs
                .iter()
                .zip(&ins)
                .map(|(n, s)| (!n.is_empty()).then_some(s.as_slice()))
                .collect();
            let Ok(outs) = crate::ops::infer_shape(node, &refs) else {
                return;
            };
            for (o, s) in node.outputs.iter().zip(outs) {
                self.shapes[k].insert(o.clone(), s);
            }
        }
    }
}

impl Importer {
    fn initializers(&mut self, initializers: Vec<TensorProto>) -> Result<()> {
        for t in initializers {
            let name = t.name().to_string();
            if name.is_empty() {
                return Err(decode_err("an initializer has no name"));
            }
            let c = tensor::decode(t)?;
            if self.consts.insert(name.clone(), c).is_some() {
                return Err(decode_err(format!("initializer `{name}` is defined twice")));
            }
            self.initializer_names.insert(name);
        }
        Ok(())
    }

    /// Runtime inputs: the graph inputs that are not initializers (IR 3 lists both).
    fn inputs(&mut self, graph: &GraphProto) -> Result<Vec<ValueInfo>> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for v in graph
            .input
            .iter()
            .filter(|v| !self.consts.contains_key(v.name()))
        {
            let (vi, dtype) = value_info(v)?;
            self.dtypes.insert(vi.name.clone(), dtype);
            if !seen.insert(vi.name.clone()) {
                return Err(decode_err(format!(
                    "graph input `{}` is declared twice",
                    vi.name
                )));
            }
            out.push(vi);
        }
        Ok(out)
    }

    fn resolve(&self, name: &str) -> String {
        self.aliases
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string())
    }

    fn unique_name(&mut self, n: &NodeProto, index: usize) -> String {
        let first_out = n.output.first().map(String::as_str).unwrap_or("");
        let mut candidates = [n.name(), first_out].into_iter().filter(|s| !s.is_empty());
        let base = match candidates.find(|s| !self.node_names.contains(*s)) {
            Some(s) => s.to_string(),
            None => {
                let mut k = 0usize;
                loop {
                    let s = format!(
                        "{}_{index}{}",
                        n.op_type(),
                        if k == 0 {
                            String::new()
                        } else {
                            format!("_{k}")
                        }
                    );
                    if !self.node_names.contains(&s) {
                        break s;
                    }
                    k += 1;
                }
            }
        };
        self.node_names.insert(base.clone());
        base
    }

    /// The element type of a value known so far.
    fn dtype(&self, name: &str) -> Option<DType> {
        match self.consts.get(name) {
            Some(c) => Some(c.dtype()),
            None => self.dtypes.get(name).copied(),
        }
    }

    /// Checks that every input of `node` has the element type its op reads, and records the
    /// types of its outputs.
    fn check_dtypes(&mut self, node: &Node) -> Result<()> {
        for (i, inp) in node
            .inputs
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_empty())
        {
            let want = node.op.input_dtype(i);
            let Some(have) = self.dtype(inp) else {
                continue;
            };
            if have == want {
                continue;
            }
            if want == DType::F32 && self.consts.contains_key(inp) {
                return Err(decode_err(format!(
                    "integer tensor `{inp}` is used as data by node `{}` ({}); Lithe weights are \
                     float tensors except where a quantization op reads them",
                    node.name,
                    node.op.name()
                )));
            }
            if want == DType::F32 && !node.op.is_quant() {
                return Err(decode_err(format!(
                    "node `{}` ({}) reads `{inp}`, which holds {have} values; Lithe computes \
                     {} on float tensors only (integer values are read by quantization ops)",
                    node.name,
                    node.op.name(),
                    node.op.name()
                )));
            }
            return Err(decode_err(format!(
                "node `{}` ({}) reads `{inp}` as {want}, but it holds {have} values",
                node.name,
                node.op.name()
            )));
        }
        for (k, o) in node.outputs.iter().enumerate() {
            self.dtypes.insert(o.clone(), node.op.output_dtype(k));
        }
        Ok(())
    }

    /// Checks the scale and zero-point shapes of a quantization node whose input shapes are
    /// known at import (at batch sizes 1 and 2), so a malformed file fails here rather than
    /// when it is run.
    fn check_quant_shapes(&self, node: &Node) -> Result<()> {
        for k in 0..2 {
            let ins = self.input_shapes(node, k);
            let Some(ins) = ins else { return Ok(()) };
            let refs: Vec<Option<&[usize]>> = node
                .inputs
                .iter()
                .zip(&ins)
                .map(|(n, s)| (!n.is_empty()).then_some(s.as_slice()))
                .collect();
            crate::ops::infer_shape(node, &refs)?;
        }
        Ok(())
    }

    fn check_not_dropped(&self, value: &str, reader: &str) -> Result<()> {
        match self.dropped.get(value) {
            Some((node, op)) => Err(Error::Graph(format!(
                "{reader} reads `{value}`, an extra output of {op} `{node}` that Lithe does not compute \
                 (only the first output of {op} is supported)"
            ))),
            None => Ok(()),
        }
    }

    fn nodes(&mut self, graph: &GraphProto) -> Result<()> {
        for n in &graph.node {
            self.read_by_file
                .extend(n.input.iter().filter(|s| !s.is_empty()).cloned());
        }
        for i in topo_order(&graph.node) {
            let Some(n) = graph.node.get(i) else { continue };
            let Some((op_type, build)) = builders::lookup(n.op_type()) else {
                return Err(Error::UnsupportedOps(vec![op_label(n)]));
            };
            let name = self.unique_name(n, i);
            let inputs: Vec<String> = n.input.iter().map(|s| self.resolve(s)).collect();
            for s in inputs.iter().filter(|s| !s.is_empty()) {
                self.check_not_dropped(s, &format!("node `{name}`"))?;
            }
            let first = match n.output.first() {
                Some(o) if !o.is_empty() => o.clone(),
                _ => {
                    return Err(Error::Graph(format!(
                        "node `{name}` ({op_type}) has no output"
                    )));
                }
            };
            let ctx = NodeCtx {
                proto: n,
                name: &name,
                op_type,
                opset: self.opset,
                inputs: &inputs,
                consts: &self.consts,
                sym: &self.sym,
                shapes: &self.shapes,
                dtypes: &self.dtypes,
            };
            let built = build(&ctx)?;
            // Outputs Lithe computes: a prefix of named outputs, up to the op's count.
            let kept = match &built {
                Built::Op { op, .. } => n
                    .output
                    .iter()
                    .take(op.max_outputs())
                    .take_while(|s| !s.is_empty())
                    .count(),
                _ => 1,
            };
            for extra in n.output.iter().skip(kept).filter(|s| !s.is_empty()) {
                self.dropped.insert(extra.clone(), (name.clone(), op_type));
            }
            if self.consts.contains_key(&first) || self.aliases.contains_key(&first) {
                return Err(Error::Graph(format!("value `{first}` is produced twice")));
            }
            match built {
                Built::Op { op, inputs } => {
                    let node = Node {
                        name,
                        op,
                        inputs,
                        outputs: n.output.iter().take(kept.max(1)).cloned().collect(),
                    };
                    self.check_dtypes(&node)?;
                    if node.op.is_quant() {
                        self.check_quant_shapes(&node)?;
                    }
                    self.record_shapes(&node);
                    self.built.push(node);
                }
                Built::Const(c) => {
                    self.consts.insert(first, c);
                }
                Built::SymConst(c, dims) => {
                    self.consts.insert(first.clone(), c);
                    self.sym.insert(first, dims);
                }
                Built::Alias(src) => {
                    self.aliases.insert(first, src);
                }
            }
        }
        Ok(())
    }

    /// Graph outputs; an output that is an Identity of another value gets that value renamed
    /// to it (or, when that is impossible, an identity node).
    fn outputs(&mut self, graph: &GraphProto) -> Result<Vec<String>> {
        let outputs: Vec<String> = graph.output.iter().map(|v| v.name().to_string()).collect();
        for o in &outputs {
            if o.is_empty() {
                return Err(decode_err("a graph output has no name"));
            }
            self.check_not_dropped(o, "the graph output")?;
        }
        // Decide every rename first, then apply them in one pass over the nodes.
        let declared: HashSet<&str> = outputs.iter().map(String::as_str).collect();
        let produced: HashSet<String> = self
            .built
            .iter()
            .flat_map(|n| n.outputs.iter().cloned())
            .collect();
        let mut renamed: HashMap<String, String> = HashMap::new();
        let mut identities = Vec::new();
        for o in &outputs {
            let Some(src) = self.aliases.get(o).cloned() else {
                continue;
            };
            if produced.contains(&src)
                && !declared.contains(src.as_str())
                && !renamed.contains_key(&src)
            {
                renamed.insert(src, o.clone());
            } else if let Some(c) = self.consts.get(&src).cloned() {
                self.consts.insert(o.clone(), c);
            } else {
                // A graph input, another graph output, or a value already renamed for one.
                let src = renamed.get(&src).cloned().unwrap_or(src);
                identities.push((src, o.clone()));
            }
        }
        if !renamed.is_empty() {
            for n in self.built.iter_mut() {
                for v in n.inputs.iter_mut().chain(n.outputs.iter_mut()) {
                    if let Some(o) = renamed.get(v.as_str()) {
                        v.clone_from(o);
                    }
                }
            }
        }
        for (src, o) in identities {
            let name = self.unique_name(&NodeProto::default(), self.built.len());
            self.built.push(Node {
                name,
                op: Op::Dropout { ratio: 0.0 },
                inputs: vec![src],
                outputs: vec![o],
            });
        }
        Ok(outputs)
    }

    /// Float constants read by a node or returned by the graph become weights, as do
    /// initializers nothing reads; constants only folded into attributes are dropped.
    fn weights(&mut self, outputs: &[String]) -> Result<BTreeMap<String, crate::tensor::Tensor>> {
        let mut used: HashSet<&str> = outputs.iter().map(String::as_str).collect();
        for n in &self.built {
            used.extend(n.inputs.iter().map(String::as_str));
        }
        let mut weights = BTreeMap::new();
        for (name, c) in std::mem::take(&mut self.consts) {
            let keep = used.contains(name.as_str())
                || (self.initializer_names.contains(&name) && !self.read_by_file.contains(&name));
            if !keep {
                continue;
            }
            match c.into_tensor() {
                Some(t) => {
                    weights.insert(name, t?);
                }
                None if used.contains(name.as_str()) => {
                    return Err(decode_err(format!(
                        "integer tensor `{name}` is used as data; Lithe weights are float tensors"
                    )));
                }
                None => {}
            }
        }
        Ok(weights)
    }
}

//! Structured pruning: whole filters (output channels of a Conv, output units of a Gemm) are
//! removed and the graph becomes physically thinner.
//!
//! The pass first finds the *channel groups* of the graph: the sets of values that share one
//! channel axis. A group starts at the output of a producer (a Conv with `groups == 1` or a
//! Gemm, both with stored weights) and follows the channel through BatchNorm, elementwise
//! activations, Dropout, pooling and depthwise convolutions (`groups == channels`, one filter
//! per channel), through `Flatten(axis = 1)` (after which a channel is the block of `H·W`
//! consecutive columns in C·H·W order) and ends at the input channels of the consuming
//! Conv/Gemm. A residual `Add` joins the groups of its two inputs, so every producer of the sum
//! keeps the same channels. A group is left alone when any of its values reaches a graph
//! output (the logits are never thinned), a graph input, a `Concat`, `Reshape`, `MatMul`,
//! `Softmax` or any other operator that does not keep channels apart, or a weight read by more
//! than one node.
//!
//! Each selected group ranks its channels, keeps the best `C − ⌊ratio·C⌋` (at least
//! `min_channels`) and slices every tensor of the group: producer filters and biases, the four
//! BatchNorm vectors, depthwise filters (and their `groups`), and the consumers' input
//! channels. Ranking: `l1`, the sum over the group's producers of the L1 norm of filter `i`;
//! `bn_gamma` ("network slimming", Liu et al. 2017), the sum of `|γ_i|` over the BatchNorms
//! that directly follow a producer.

use super::{PassCtx, PassReport, Target};
use crate::graph::{Graph, Op};
use crate::tensor::Tensor;
use crate::{Error, Result};
use ndarray::Axis;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// How channels are ranked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// L1 norm of each filter, summed over the producers of the group.
    L1,
    /// `|γ|` of the BatchNorm right after the producer ("network slimming").
    BnGamma,
}

fn one() -> usize {
    1
}

/// Knobs of the `prune_filters` pass.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FilterSpec {
    /// Ranking of channels.
    pub criterion: Criterion,
    /// Fraction of each selected group's channels removed (`⌊ratio·C⌋`), in `[0, 1)`.
    pub ratio: f32,
    /// Producer nodes (node or weight names) whose groups are thinned; `None` means every
    /// group that can be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<String>>,
    /// Fewest channels a group keeps (at least 1).
    #[serde(default = "one")]
    pub min_channels: usize,
}

impl FilterSpec {
    /// Checks the knobs.
    pub fn check(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.ratio) {
            return Err(Error::Invalid(format!(
                "prune_filters: ratio must be in [0, 1), got {}",
                self.ratio
            )));
        }
        if self.min_channels == 0 {
            return Err(Error::Invalid(
                "prune_filters: min_channels must be at least 1".into(),
            ));
        }
        if self.layers.as_ref().is_some_and(|l| l.is_empty()) {
            return Err(Error::Invalid(
                "prune_filters: `layers` is empty (omit it to thin every group)".into(),
            ));
        }
        Ok(())
    }
}

/// A consumer of a group: a Conv reading the channels as input channels, or a Gemm reading
/// them as `hw` consecutive columns each.
#[derive(Clone, Debug)]
struct Consumer {
    node: usize,
    hw: usize,
}

/// A set of values sharing one channel axis, and every node whose tensors index it.
#[derive(Clone, Debug, Default)]
struct Space {
    channels: usize,
    blocked: Option<String>,
    producers: Vec<usize>,
    batchnorms: Vec<usize>,
    depthwise: Vec<usize>,
    consumers: Vec<Consumer>,
}

/// Where a value's channels are: a space, and `Some(H·W)` once flattened.
#[derive(Clone, Copy, Debug)]
struct Carrier {
    space: usize,
    flat: Option<usize>,
}

struct Analysis {
    parent: Vec<usize>,
    spaces: Vec<Space>,
}

impl Analysis {
    fn root(&mut self, mut s: usize) -> usize {
        while self.parent[s] != s {
            self.parent[s] = self.parent[self.parent[s]];
            s = self.parent[s];
        }
        s
    }

    fn fresh(&mut self, channels: usize, blocked: Option<String>) -> usize {
        let id = self.spaces.len();
        self.parent.push(id);
        self.spaces.push(Space {
            channels,
            blocked,
            ..Space::default()
        });
        id
    }

    fn block(&mut self, s: usize, why: String) {
        let r = self.root(s);
        if self.spaces[r].blocked.is_none() {
            self.spaces[r].blocked = Some(why);
        }
    }

    fn union(&mut self, a: usize, b: usize) -> usize {
        let (ra, rb) = (self.root(a), self.root(b));
        if ra == rb {
            return ra;
        }
        let moved = std::mem::take(&mut self.spaces[rb]);
        self.parent[rb] = ra;
        let into = &mut self.spaces[ra];
        if into.blocked.is_none() {
            into.blocked = moved.blocked;
        }
        into.producers.extend(moved.producers);
        into.batchnorms.extend(moved.batchnorms);
        into.depthwise.extend(moved.depthwise);
        into.consumers.extend(moved.consumers);
        ra
    }

    fn at(&mut self, s: usize) -> &mut Space {
        let r = self.root(s);
        &mut self.spaces[r]
    }
}

fn stored<'g>(g: &'g Graph, name: Option<&String>) -> Option<&'g Tensor> {
    name.filter(|s| !s.is_empty())
        .and_then(|s| g.weights.get(s))
}

/// Finds the channel spaces of `g` (already validated, nodes in topological order).
fn analyse(g: &Graph) -> Result<Analysis> {
    let shapes = g.infer_shapes(1)?;
    let mut a = Analysis {
        parent: Vec::new(),
        spaces: Vec::new(),
    };
    let mut carrier: HashMap<String, Carrier> = HashMap::new();
    let chan = |v: &str| shapes.get(v).and_then(|s| s.get(1).copied()).unwrap_or(0);
    for v in &g.inputs {
        let s = a.fresh(
            chan(&v.name),
            Some(format!("it reaches graph input `{}`", v.name)),
        );
        carrier.insert(
            v.name.clone(),
            Carrier {
                space: s,
                flat: None,
            },
        );
    }
    for (i, n) in g.nodes.iter().enumerate() {
        let ins: Vec<Option<Carrier>> = n
            .inputs
            .iter()
            .map(|v| carrier.get(v.as_str()).copied())
            .collect();
        let x = ins.first().copied().flatten();
        let out0 = n.outputs[0].clone();
        let blocked_out = |a: &mut Analysis, why: String| -> Carrier {
            Carrier {
                space: a.fresh(chan(&out0), Some(why)),
                flat: None,
            }
        };
        let why = format!("it reaches `{}` ({})", n.name, n.op.name());
        let bias_ok = |k: usize| match n.inputs.get(k) {
            None => true,
            Some(b) if b.is_empty() => true,
            Some(b) => g.weights.contains_key(b),
        };
        let out: Carrier = match &n.op {
            Op::Conv(attrs) => {
                let w = stored(g, n.inputs.get(1)).filter(|w| w.ndim() == 4);
                let (cin, cout) = (chan(&n.inputs[0]), chan(&out0));
                let depthwise = w.is_some_and(|w| w.shape()[1] == 1)
                    && attrs.groups == cin
                    && cout == cin
                    && cin > 1;
                match (w, x) {
                    (Some(_), Some(c)) if depthwise && c.flat.is_none() && bias_ok(2) => {
                        a.at(c.space).depthwise.push(i);
                        c
                    }
                    (Some(_), x) if attrs.groups == 1 && bias_ok(2) => {
                        if let Some(c) = x {
                            match c.flat {
                                None => a.at(c.space).consumers.push(Consumer { node: i, hw: 1 }),
                                Some(_) => a.block(c.space, why.clone()),
                            }
                        }
                        let s = a.fresh(cout, None);
                        a.at(s).producers.push(i);
                        Carrier {
                            space: s,
                            flat: None,
                        }
                    }
                    _ => {
                        if let Some(c) = x {
                            a.block(c.space, why.clone());
                        }
                        blocked_out(&mut a, why.clone())
                    }
                }
            }
            Op::Gemm(attrs) => {
                let w = stored(g, n.inputs.get(1)).filter(|w| w.ndim() == 2);
                let xshape = shapes.get(&n.inputs[0]).cloned().unwrap_or_default();
                match w {
                    Some(_) if !attrs.trans_a && bias_ok(2) && xshape.len() == 2 => {
                        if let Some(c) = x {
                            let hw = c.flat.unwrap_or(1);
                            a.at(c.space).consumers.push(Consumer { node: i, hw });
                        }
                        let s = a.fresh(chan(&out0), None);
                        a.at(s).producers.push(i);
                        Carrier {
                            space: s,
                            flat: None,
                        }
                    }
                    _ => {
                        if let Some(c) = x {
                            a.block(c.space, why.clone());
                        }
                        blocked_out(&mut a, why.clone())
                    }
                }
            }
            Op::BatchNorm { .. } => {
                let c_here = chan(&n.inputs[0]);
                let params_ok = n.inputs[1..]
                    .iter()
                    .all(|p| g.weights.get(p).is_some_and(|t| t.len() == c_here));
                match x {
                    Some(c) if c.flat.is_none() && params_ok => {
                        a.at(c.space).batchnorms.push(i);
                        c
                    }
                    Some(c) => {
                        a.block(c.space, why.clone());
                        blocked_out(&mut a, why.clone())
                    }
                    None => blocked_out(&mut a, why.clone()),
                }
            }
            Op::Relu | Op::Clip { .. } | Op::Sigmoid | Op::Tanh | Op::Dropout { .. } => match x {
                Some(c) => c,
                None => blocked_out(&mut a, why.clone()),
            },
            Op::MaxPool(_) | Op::AvgPool(_) | Op::GlobalAvgPool => match x {
                Some(c) if c.flat.is_none() => c,
                Some(c) => {
                    a.block(c.space, why.clone());
                    blocked_out(&mut a, why.clone())
                }
                None => blocked_out(&mut a, why.clone()),
            },
            Op::Flatten { axis } => {
                let s = shapes.get(&n.inputs[0]).cloned().unwrap_or_default();
                match x {
                    Some(c) if *axis == 1 && c.flat.is_none() && s.len() >= 2 => Carrier {
                        space: c.space,
                        flat: Some(s[2..].iter().product()),
                    },
                    Some(c) => {
                        a.block(c.space, why.clone());
                        blocked_out(&mut a, why.clone())
                    }
                    None => blocked_out(&mut a, why.clone()),
                }
            }
            Op::Add => {
                let same_shape = shapes.get(&n.inputs[0]) == shapes.get(&n.inputs[1]);
                match (ins[0], ins[1]) {
                    (Some(p), Some(q)) if p.flat.is_none() && q.flat.is_none() && same_shape => {
                        Carrier {
                            space: a.union(p.space, q.space),
                            flat: None,
                        }
                    }
                    _ => {
                        for c in ins.iter().flatten() {
                            a.block(c.space, why.clone());
                        }
                        blocked_out(&mut a, why.clone())
                    }
                }
            }
            _ => {
                for c in ins.iter().flatten() {
                    a.block(c.space, why.clone());
                }
                blocked_out(&mut a, why.clone())
            }
        };
        carrier.insert(out0.clone(), out);
        for o in n.outputs.iter().skip(1) {
            let s = a.fresh(chan(o), Some(format!("it is output `{o}` of `{}`", n.name)));
            carrier.insert(
                o.clone(),
                Carrier {
                    space: s,
                    flat: None,
                },
            );
        }
    }
    for o in &g.outputs {
        if let Some(c) = carrier.get(o).copied() {
            a.block(c.space, format!("it reaches graph output `{o}`"));
        }
    }
    // A weight that another node also reads cannot be sliced for this group alone.
    let mut readers: HashMap<&str, usize> = HashMap::new();
    for n in &g.nodes {
        for v in &n.inputs {
            if g.weights.contains_key(v) {
                *readers.entry(v.as_str()).or_default() += 1;
            }
        }
    }
    for s in 0..a.spaces.len() {
        if a.root(s) != s || a.spaces[s].blocked.is_some() {
            continue;
        }
        let sp = &a.spaces[s];
        let nodes = sp
            .producers
            .iter()
            .chain(&sp.batchnorms)
            .chain(&sp.depthwise)
            .chain(sp.consumers.iter().map(|c| &c.node));
        let mut shared = None;
        for &i in nodes {
            for v in g.nodes[i].inputs.iter().skip(1) {
                if readers.get(v.as_str()).copied().unwrap_or(0) > 1 {
                    shared = Some(format!("weight `{v}` is read by more than one node"));
                }
            }
        }
        if let Some(why) = shared {
            a.spaces[s].blocked = Some(why);
        }
    }
    Ok(a)
}

/// What happened to one channel group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupReport {
    /// Producer nodes of the group (more than one when joined by a residual `Add`).
    pub producers: Vec<String>,
    /// Channels before.
    pub channels_before: usize,
    /// Channels after.
    pub channels_after: usize,
    /// Indices (in the original numbering) of the channels kept, ascending.
    pub kept: Vec<usize>,
    /// Every node whose tensors were sliced (producers, BatchNorms, depthwise convs,
    /// consumers).
    pub touched: Vec<String>,
}

/// Rows of a Gemm weight as `[out, in]`: returns `(out_axis, in_axis)`.
fn gemm_axes(g: &Graph, node: usize) -> (usize, usize) {
    match &g.nodes[node].op {
        Op::Gemm(a) if !a.trans_b => (1, 0),
        _ => (0, 1),
    }
}

fn importance(g: &Graph, sp: &Space, criterion: Criterion) -> Result<Option<Vec<f64>>> {
    let c = sp.channels;
    let mut score = vec![0f64; c];
    match criterion {
        Criterion::L1 => {
            for &p in &sp.producers {
                let n = &g.nodes[p];
                let w = &g.weights[&n.inputs[1]];
                let axis = match n.op {
                    Op::Gemm(_) => gemm_axes(g, p).0,
                    _ => 0,
                };
                if w.shape()[axis] != c {
                    return Err(Error::Graph(format!(
                        "prune_filters: `{}` has {} filters, its output has {c} channels",
                        n.name,
                        w.shape()[axis]
                    )));
                }
                for (i, f) in w.axis_iter(Axis(axis)).enumerate() {
                    score[i] += f.iter().map(|v| f64::from(v.abs())).sum::<f64>();
                }
            }
            Ok(Some(score))
        }
        Criterion::BnGamma => {
            let mut found = false;
            for &b in &sp.batchnorms {
                let n = &g.nodes[b];
                let direct = sp
                    .producers
                    .iter()
                    .any(|&p| g.nodes[p].outputs[0] == n.inputs[0]);
                if !direct {
                    continue;
                }
                found = true;
                let gamma = &g.weights[&n.inputs[1]];
                for (i, v) in gamma.iter().enumerate().take(c) {
                    score[i] += f64::from(v.abs());
                }
            }
            Ok(found.then_some(score))
        }
    }
}

fn slice(g: &mut Graph, name: &str, axis: usize, idx: &[usize], want: usize) -> Result<()> {
    let t = g
        .weights
        .get(name)
        .ok_or_else(|| Error::Graph(format!("missing weight `{name}`")))?;
    if axis >= t.ndim() || t.shape()[axis] != want {
        return Err(Error::Graph(format!(
            "prune_filters: weight `{name}` of shape {:?} has no axis {axis} of length {want}",
            t.shape()
        )));
    }
    let s = t.select(Axis(axis), idx);
    g.weights.insert(name.to_string(), s);
    Ok(())
}

/// Slices a bias (`[C]`, `[1, C]`, or a broadcast scalar left as it is) to the kept channels.
fn slice_bias(g: &mut Graph, name: Option<&String>, idx: &[usize], c: usize) -> Result<()> {
    let Some(name) = name.filter(|s| !s.is_empty()) else {
        return Ok(());
    };
    let Some(t) = g.weights.get(name) else {
        return Err(Error::Graph(format!(
            "bias `{name}` is not a stored weight"
        )));
    };
    if t.len() == 1 && c != 1 {
        return Ok(());
    }
    let axis = t.ndim().saturating_sub(1);
    slice(g, name, axis, idx, c)
}

/// Thins `g` in place as `spec` says; returns one row per group that lost channels. The graph
/// is validated before and after.
pub fn prune_filters(g: &mut Graph, spec: &FilterSpec) -> Result<Vec<GroupReport>> {
    spec.check()?;
    g.validate()?;
    let mut an = analyse(g)?;
    let roots: Vec<usize> = (0..an.spaces.len())
        .filter(|&s| an.root(s) == s && !an.spaces[s].producers.is_empty())
        .collect();
    let mut selected: Vec<usize> = Vec::new();
    match &spec.layers {
        None => {
            selected.extend(roots.iter().copied().filter(|&s| {
                let sp = &an.spaces[s];
                sp.blocked.is_none() && sp.channels > 1
            }));
        }
        Some(names) => {
            for name in names {
                let node = g
                    .nodes
                    .iter()
                    .position(|n| &n.name == name || n.inputs.get(1) == Some(name))
                    .ok_or_else(|| {
                        Error::Invalid(format!("prune_filters: unknown layer `{name}`"))
                    })?;
                let s = roots
                    .iter()
                    .copied()
                    .find(|&s| an.spaces[s].producers.contains(&node))
                    .ok_or_else(|| {
                        Error::Invalid(format!(
                            "prune_filters: `{name}` is not a Conv (groups 1) or Gemm with a \
                             stored weight"
                        ))
                    })?;
                if let Some(why) = &an.spaces[s].blocked {
                    return Err(Error::Invalid(format!(
                        "prune_filters: the outputs of `{name}` cannot be thinned: {why}"
                    )));
                }
                if !selected.contains(&s) {
                    selected.push(s);
                }
            }
            selected.sort_unstable();
        }
    }
    // Rank every selected group on the original weights, then slice.
    let mut plans: Vec<(usize, Vec<usize>)> = Vec::new();
    for &s in &selected {
        let sp = &an.spaces[s];
        let Some(score) = importance(g, sp, spec.criterion)? else {
            if spec.layers.is_some() {
                return Err(Error::Invalid(format!(
                    "prune_filters: bn_gamma needs a BatchNorm right after `{}`",
                    g.nodes[sp.producers[0]].name
                )));
            }
            continue;
        };
        let c = sp.channels;
        let remove = ((c as f64) * f64::from(spec.ratio) + 1e-9).floor() as usize;
        let keep_n = c.saturating_sub(remove).max(spec.min_channels).min(c);
        if keep_n == c {
            continue;
        }
        let mut order: Vec<usize> = (0..c).collect();
        order.sort_by(|&p, &q| score[q].total_cmp(&score[p]).then(p.cmp(&q)));
        let mut keep: Vec<usize> = order[..keep_n].to_vec();
        keep.sort_unstable();
        plans.push((s, keep));
    }
    if plans.is_empty() && spec.criterion == Criterion::BnGamma && spec.ratio > 0.0 {
        let any = selected
            .iter()
            .any(|&s| !an.spaces[s].batchnorms.is_empty());
        if !any {
            return Err(Error::Invalid(
                "prune_filters: bn_gamma needs BatchNorms after the prunable layers; this graph \
                 has none (use criterion l1)"
                    .into(),
            ));
        }
    }
    let mut reports = Vec::with_capacity(plans.len());
    for (s, keep) in plans {
        let sp = an.spaces[s].clone();
        let c = sp.channels;
        let mut touched = Vec::new();
        for &p in &sp.producers {
            let n = g.nodes[p].clone();
            let axis = match n.op {
                Op::Gemm(_) => gemm_axes(g, p).0,
                _ => 0,
            };
            slice(g, &n.inputs[1], axis, &keep, c)?;
            slice_bias(g, n.inputs.get(2), &keep, c)?;
            touched.push(n.name);
        }
        for &b in &sp.batchnorms {
            let n = g.nodes[b].clone();
            for p in &n.inputs[1..] {
                slice(g, p, 0, &keep, c)?;
            }
            touched.push(n.name);
        }
        for &d in &sp.depthwise {
            let n = g.nodes[d].clone();
            slice(g, &n.inputs[1], 0, &keep, c)?;
            slice_bias(g, n.inputs.get(2), &keep, c)?;
            if let Op::Conv(attrs) = &mut g.nodes[d].op {
                attrs.groups = keep.len();
            }
            touched.push(n.name);
        }
        for cons in &sp.consumers {
            let n = g.nodes[cons.node].clone();
            match n.op {
                Op::Gemm(_) => {
                    let cols: Vec<usize> = keep
                        .iter()
                        .flat_map(|&k| k * cons.hw..(k + 1) * cons.hw)
                        .collect();
                    let axis = gemm_axes(g, cons.node).1;
                    slice(g, &n.inputs[1], axis, &cols, c * cons.hw)?;
                }
                _ => slice(g, &n.inputs[1], 1, &keep, c)?,
            }
            touched.push(n.name);
        }
        reports.push(GroupReport {
            producers: sp
                .producers
                .iter()
                .map(|&p| g.nodes[p].name.clone())
                .collect(),
            channels_before: c,
            channels_after: keep.len(),
            kept: keep,
            touched,
        });
    }
    g.validate()?;
    g.infer_shapes(1)?;
    Ok(reports)
}

/// Structured passes rewrite shapes, so they must run on float weights with no masks yet.
fn require_first(ctx: &PassCtx, pass: &str) -> Result<()> {
    if !ctx.masks.is_empty()
        || !ctx.quantized.is_empty()
        || !ctx.shared.is_empty()
        || !ctx.lowbit.is_empty()
    {
        return Err(Error::Invalid(format!(
            "{pass} changes weight shapes, so it must run before prune, quantize, share, lowbit \
             and qat"
        )));
    }
    Ok(())
}

/// A [`PassReport`] for a pass that rewrote shapes or nodes: one row per target weight after
/// the pass, with its shape before and after in `encoding`.
fn report(
    pass: &str,
    g: &Graph,
    ctx: &PassCtx,
    before: &BTreeMap<String, (Vec<usize>, usize)>,
    bytes_before: usize,
    macs_before: u64,
) -> Result<PassReport> {
    let tg: Vec<Target> = super::targets(g);
    let mut layers = Vec::with_capacity(tg.len());
    for t in &tg {
        let w = &g.weights[&t.weight];
        let nonzero = w.iter().filter(|v| **v != 0.0).count();
        let (enc, bits, bytes_after) = super::storage(&t.weight, g, ctx)?;
        let (shape0, bytes0) = before.get(&t.weight).cloned().unwrap_or((Vec::new(), 0));
        layers.push(super::LayerReport {
            name: t.weight.clone(),
            node: t.node.clone(),
            params: w.len(),
            nonzero,
            bits,
            bytes_before: bytes0,
            bytes_after,
            encoding: format!("{enc} {shape0:?} -> {:?}", w.shape()),
        });
    }
    super::pass_report(pass, g, ctx, layers, bytes_before, macs_before)
}

/// Shapes and encoded sizes of the target weights, for [`report`].
fn snapshot(g: &Graph, ctx: &PassCtx) -> Result<BTreeMap<String, (Vec<usize>, usize)>> {
    super::targets(g)
        .into_iter()
        .map(|t| {
            let bytes = super::storage(&t.weight, g, ctx)?.2;
            Ok((
                t.weight.clone(),
                (g.weights[&t.weight].shape().to_vec(), bytes),
            ))
        })
        .collect()
}

/// Runs one of the shape-changing passes (`prune_filters`, `remove_block`, `merge_linear`)
/// and reports it.
pub(super) fn pass(
    spec: &super::PassSpec,
    g: &mut Graph,
    ctx: &mut PassCtx,
    bytes_before: usize,
    macs_before: u64,
) -> Result<PassReport> {
    require_first(ctx, spec.name())?;
    let before = snapshot(g, ctx)?;
    match spec {
        super::PassSpec::PruneFilters(s) => {
            prune_filters(g, s)?;
        }
        super::PassSpec::RemoveBlock(s) => {
            super::layer::remove_block(g, s)?;
        }
        super::PassSpec::MergeLinear(s) => {
            super::layer::merge_linear(g, s)?;
        }
        _ => {
            return Err(Error::Invalid(format!(
                "{} is not a structured pass",
                spec.name()
            )));
        }
    }
    report(spec.name(), g, ctx, &before, bytes_before, macs_before)
}

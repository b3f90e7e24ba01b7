//! Compression passes: named transforms of a [`Graph`] that each return a [`PassReport`], and the
//! [`Recipe`] that runs an ordered list of them.
//!
//! ```
//! use lithe::compress::{PassSpec, Recipe, prune::PruneSpec, quantize::QuantParams};
//! use lithe::{data::Dataset, zoo};
//! let g = zoo::build(zoo::Arch::TinyMlp, 1).unwrap();
//! let recipe = Recipe {
//!     passes: vec![
//!         PassSpec::Prune(PruneSpec::Global { ratio: 0.5 }),
//!         PassSpec::Quantize(QuantParams { bits: 8, symmetric: true, per_channel: true }),
//!     ],
//! };
//! let json = recipe.to_json().unwrap();
//! assert_eq!(Recipe::from_json(&json).unwrap(), recipe);
//! let eval = Dataset::synthetic(64, 3);
//! let out = recipe.apply(&g, None, Some(&eval), &mut |_| std::ops::ControlFlow::Continue(())).unwrap();
//! assert_eq!(out.reports.len(), 2);
//! assert!(out.reports[1].bytes_after < out.reports[0].bytes_before);
//! ```

pub mod actquant;
pub mod energy;
pub mod huffman;
pub mod intonly;
pub mod kmeans;
pub mod layer;
pub mod lottery;
pub mod lowbit;
pub mod lowrank;
pub mod prune;
pub mod qdq;
pub mod qdq_weights;
pub mod quantize;
pub mod sparse;
pub mod structured;

use crate::data::Dataset;
use crate::graph::{Graph, Op};
use crate::train::{Masks, Progress, TrainConfig, TrainSummary};
use crate::{Error, Result};
use kmeans::{ShareParams, SharedTensor};
use quantize::{QuantParams, QuantizedTensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::ControlFlow;

/// A compressible weight: the weight input of a Gemm, Conv or MatMul node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Node that consumes the weight.
    pub node: String,
    /// Weight name.
    pub weight: String,
    /// Axis of the weight that indexes output channels (per-channel quantization).
    pub axis: usize,
}

/// The weights passes act on: the `B`/`W` input of every Gemm, Conv and MatMul node that is a
/// stored weight (biases and BatchNorm parameters are never targets), each listed once.
pub fn targets(g: &Graph) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    for n in &g.nodes {
        let Some(w) = n.inputs.get(1).filter(|w| g.weights.contains_key(*w)) else {
            continue;
        };
        let rank = g.weights[w].ndim();
        let axis = match &n.op {
            Op::Gemm(a) => usize::from(!a.trans_b),
            Op::Conv(_) => 0,
            Op::MatMul => rank.saturating_sub(1),
            _ => continue,
        };
        if rank == 0 || out.iter().any(|t| &t.weight == w) {
            continue;
        }
        out.push(Target {
            node: n.name.clone(),
            weight: w.clone(),
            axis,
        });
    }
    out
}

/// One compression step with its knobs. A closed set: every pass the engine knows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "pass", rename_all = "snake_case")]
pub enum PassSpec {
    /// Magnitude pruning of connections; records masks.
    Prune(prune::PruneSpec),
    /// Linear quantization of every target weight to integer codes.
    Quantize(QuantParams),
    /// Fine-tuning on the recipe's training data, keeping pruned weights at zero.
    FineTune(TrainConfig),
    /// Weight sharing: k-means codebook of `2^bits` centroids per target weight (pruned
    /// elements stay zero and are not clustered).
    Share(ShareParams),
    /// Centroid fine-tuning of the shared weights on the training data (after `share`).
    ShareFineTune(kmeans::ShareTune),
    /// Low-rank factorisation (truncated SVD) of Gemm weights into two Gemms; rewrites the
    /// graph.
    LowRank(lowrank::LowRankSpec),
    /// Rewrites standard convolutions as depthwise + pointwise (MobileNet) by per-channel SVD;
    /// rewrites the graph.
    Separable(lowrank::SeparableSpec),
    /// Integer-only int8 model (Jacob et al. 2018) calibrated on the recipe's training data;
    /// must be the last pass. See [`intonly`].
    Int8(intonly::Int8Spec),
    /// Filter/channel pruning: removes whole output channels and thins the graph (before
    /// `prune`, `quantize` and `share`).
    PruneFilters(structured::FilterSpec),
    /// Removes a block whose input and output shapes match (it becomes the identity).
    RemoveBlock(layer::BlockSpec),
    /// Merges two adjacent Gemms into one (activations between them are dropped).
    MergeLinear(layer::MergeSpec),
    /// Low-bit quantization of every target weight: log2, binary, ternary or DoReFa codes.
    Lowbit(lowbit::LowBitParams),
    /// Quantization-aware fine-tuning (straight-through estimator), then quantization for real.
    Qat(lowbit::QatSpec),
    /// Knowledge distillation from a teacher (`"teacher": "original"` = the graph the recipe
    /// started from, or the name of a graph in [`PassCtx::graphs`]), keeping pruned weights
    /// at zero.
    Distill(crate::train::distill::DistillPass),
    /// Lottery ticket: iterative magnitude pruning with rewinding to the initial weights.
    Lottery(lottery::LotterySpec),
}

/// State carried from pass to pass: masks, quantized weights, and what fine-tuning needs.
pub struct PassCtx<'a> {
    /// Pruning masks by weight name (`true` = kept).
    pub masks: Masks,
    /// Integer codes of quantized weights by name; the graph holds their dequantized values.
    pub quantized: BTreeMap<String, QuantizedTensor>,
    /// Codebooks and indices of shared weights by name; the graph holds their decoded values.
    pub shared: BTreeMap<String, SharedTensor>,
    /// Low-bit codes by weight name; the graph holds their decoded values.
    pub lowbit: BTreeMap<String, lowbit::LowBitTensor>,
    /// Training data for [`PassSpec::FineTune`].
    pub data: Option<&'a Dataset>,
    /// Progress of fine-tuning; `Break` cancels it.
    pub on_progress: &'a mut dyn FnMut(&Progress) -> ControlFlow<()>,
    /// Summaries of the fine-tuning runs so far, in order.
    pub finetune: Vec<TrainSummary>,
    /// The integer-only model built by [`PassSpec::Int8`].
    pub int8: Option<intonly::QGraph>,
    /// The graph before the recipe ran (the `"original"` teacher of [`PassSpec::Distill`]).
    pub original: Option<&'a Graph>,
    /// Graphs supplied by the caller by name: teachers for `distill`, initial weights for
    /// `lottery`.
    pub graphs: BTreeMap<String, Graph>,
    /// The evaluation set, when one was given (per-round accuracies of `lottery`).
    pub eval: Option<&'a Dataset>,
    /// Rounds of the lottery passes so far, in order.
    pub lottery: Vec<lottery::Round>,
}

impl<'a> PassCtx<'a> {
    /// A fresh context: no masks, nothing quantized.
    pub fn new(
        data: Option<&'a Dataset>,
        on_progress: &'a mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Self {
        PassCtx {
            masks: Masks::new(),
            quantized: BTreeMap::new(),
            shared: BTreeMap::new(),
            lowbit: BTreeMap::new(),
            data,
            on_progress,
            finetune: Vec::new(),
            int8: None,
            original: None,
            graphs: BTreeMap::new(),
            eval: None,
            lottery: Vec::new(),
        }
    }
}

/// Storage of one target weight after a pass.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerReport {
    /// Weight name.
    pub name: String,
    /// Node that uses it.
    pub node: String,
    /// Elements.
    pub params: usize,
    /// Elements that are not exactly zero.
    pub nonzero: usize,
    /// Bits per stored value (32 for f32).
    pub bits: u8,
    /// Length of the weight's encoding before the pass.
    pub bytes_before: usize,
    /// Length of the weight's encoding after the pass.
    pub bytes_after: usize,
    /// The encoding used after the pass (`dense`, `csr`, `bitmask`, `int8 sym per-channel`...).
    pub encoding: String,
}

/// What a pass did. Byte figures are lengths of real encodings (see [`sparse`] and
/// [`QuantizedTensor::encode`]), summed over every weight of the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PassReport {
    /// Pass name (`prune`, `quantize`, `fine_tune`).
    pub pass: String,
    /// One row per target weight.
    pub layers: Vec<LayerReport>,
    /// Bytes of all weights before the pass.
    pub bytes_before: usize,
    /// Bytes of all weights after the pass.
    pub bytes_after: usize,
    /// Multiply-accumulates per image before (zero weights skipped).
    pub macs_before: u64,
    /// Multiply-accumulates per image after (zero weights skipped).
    pub macs_after: u64,
    /// Fraction of target weights that are zero after the pass.
    pub sparsity: f32,
    /// Accuracy on the evaluation set before the pass, when one was given.
    pub accuracy_before: Option<f32>,
    /// Accuracy on the evaluation set after the pass, when one was given.
    pub accuracy_after: Option<f32>,
}

/// Storage of one weight in its current state: (encoding, bits, bytes).
fn storage(name: &str, g: &Graph, ctx: &PassCtx) -> Result<(String, u8, usize)> {
    if let Some(s) = ctx.shared.get(name) {
        let (bytes, _) = s.encode(kmeans::Coding::Huffman)?;
        return Ok((
            format!("shared {}-bit huffman", s.bits()),
            s.bits(),
            bytes.len(),
        ));
    }
    if let Some(l) = ctx.lowbit.get(name) {
        return Ok((l.describe(), l.bits, l.encode()?.len()));
    }
    if let Some(q) = ctx.quantized.get(name) {
        let enc = format!(
            "int{} {} {}",
            q.bits,
            if q.symmetric { "sym" } else { "asym" },
            if q.axis.is_some() {
                "per-channel"
            } else {
                "per-tensor"
            }
        );
        return Ok((enc, q.bits, q.encode()?.len()));
    }
    let w = g
        .weights
        .get(name)
        .ok_or_else(|| Error::Graph(format!("missing weight `{name}`")))?;
    let (enc, bytes) = sparse::best_len(w)?;
    Ok((enc.name().to_string(), 32, bytes))
}

fn model_bytes(g: &Graph, ctx: &PassCtx) -> Result<usize> {
    g.weights
        .keys()
        .map(|k| storage(k, g, ctx).map(|s| s.2))
        .sum()
}

/// MACs per image with every multiplication by a zero weight skipped: each element of a
/// Gemm/Conv/MatMul weight is used equally often, so a layer costs `macs · nonzero / params`.
fn effective_macs(g: &Graph, tg: &[Target]) -> Result<u64> {
    let info = crate::metrics::model_info(g)?;
    Ok(info
        .layers
        .iter()
        .map(|l| match tg.iter().find(|t| t.node == l.name) {
            Some(t) => {
                let w = &g.weights[&t.weight];
                let nz = w.iter().filter(|v| **v != 0.0).count() as u128;
                (l.macs as u128 * nz / w.len().max(1) as u128) as u64
            }
            None => l.macs,
        })
        .sum())
}

/// A [`PassReport`] for a pass that rewrote the graph: model totals recomputed on `g`, sparsity
/// over the current targets, accuracies left to [`Recipe::apply`].
fn pass_report(
    pass: &str,
    g: &Graph,
    ctx: &PassCtx,
    layers: Vec<LayerReport>,
    bytes_before: usize,
    macs_before: u64,
) -> Result<PassReport> {
    let tg: Vec<Target> = targets(g);
    let (mut zeros, mut total) = (0usize, 0usize);
    for t in &tg {
        let w = &g.weights[&t.weight];
        zeros += w.iter().filter(|v| **v == 0.0).count();
        total += w.len();
    }
    Ok(PassReport {
        pass: pass.into(),
        layers,
        bytes_before,
        bytes_after: model_bytes(g, ctx)?,
        macs_before,
        macs_after: effective_macs(g, &tg)?,
        sparsity: if total == 0 {
            0.0
        } else {
            zeros as f32 / total as f32
        },
        accuracy_before: None,
        accuracy_after: None,
    })
}

impl PassSpec {
    /// The pass's name.
    pub fn name(&self) -> &'static str {
        match self {
            PassSpec::Prune(_) => "prune",
            PassSpec::Quantize(_) => "quantize",
            PassSpec::FineTune(_) => "fine_tune",
            PassSpec::Share(_) => "share",
            PassSpec::ShareFineTune(_) => "share_fine_tune",
            PassSpec::LowRank(_) => "low_rank",
            PassSpec::Separable(_) => "separable",
            PassSpec::Int8(_) => "int8",
            PassSpec::PruneFilters(_) => "prune_filters",
            PassSpec::RemoveBlock(_) => "remove_block",
            PassSpec::MergeLinear(_) => "merge_linear",
            PassSpec::Lowbit(_) => "lowbit",
            PassSpec::Qat(_) => "qat",
            PassSpec::Distill(_) => "distill",
            PassSpec::Lottery(_) => "lottery",
        }
    }

    /// Applies the pass to `g`, updating `ctx`; the report's accuracies are left `None`
    /// ([`Recipe::apply`] fills them).
    pub fn apply(&self, g: &mut Graph, ctx: &mut PassCtx) -> Result<PassReport> {
        g.validate()?;
        if ctx.int8.is_some() {
            return Err(Error::Invalid(
                "int8 must be the last pass: nothing runs after the integer model is built".into(),
            ));
        }
        let tg = targets(g);
        let before: Vec<(String, u8, usize)> = tg
            .iter()
            .map(|t| storage(&t.weight, g, ctx))
            .collect::<Result<_>>()?;
        let bytes_before = model_bytes(g, ctx)?;
        let macs_before = effective_macs(g, &tg)?;
        match self {
            PassSpec::Prune(spec) => {
                if !ctx.quantized.is_empty() || !ctx.shared.is_empty() || !ctx.lowbit.is_empty() {
                    return Err(Error::Invalid(
                        "prune before quantize: pruning quantized codes is not supported yet"
                            .into(),
                    ));
                }
                let new = prune::prune(g, &tg, spec, &ctx.masks)?;
                ctx.masks.extend(new);
            }
            PassSpec::Quantize(p) => {
                p.check()?;
                if !ctx.shared.is_empty() || !ctx.lowbit.is_empty() {
                    return Err(Error::Invalid(
                        "quantize, share and lowbit are alternatives: a weight is linearly \
                         quantized, shared or low-bit, only one of them"
                            .into(),
                    ));
                }
                for t in &tg {
                    let q = QuantizedTensor::quantize(&g.weights[&t.weight], *p, t.axis)?;
                    g.weights.insert(t.weight.clone(), q.dequantize()?);
                    ctx.quantized.insert(t.weight.clone(), q);
                }
            }
            PassSpec::FineTune(cfg) => {
                if !ctx.quantized.is_empty() || !ctx.shared.is_empty() || !ctx.lowbit.is_empty() {
                    return Err(Error::Invalid(
                        "fine-tune before quantize: training would discard the integer codes"
                            .into(),
                    ));
                }
                let data = ctx.data.ok_or_else(|| {
                    Error::Invalid("the fine_tune pass needs training data".into())
                })?;
                let s =
                    crate::train::train_masked(g, data, None, cfg, &ctx.masks, ctx.on_progress)?;
                if s.cancelled {
                    return Err(Error::Cancelled);
                }
                ctx.finetune.push(s);
            }
            PassSpec::Share(p) => {
                p.check()?;
                if !ctx.quantized.is_empty() || !ctx.shared.is_empty() || !ctx.lowbit.is_empty() {
                    return Err(Error::Invalid(
                        "share runs once, on float weights (not after quantize or share)".into(),
                    ));
                }
                for t in &tg {
                    let mask = ctx.masks.get(&t.weight).map(|m| m.as_slice());
                    let is_conv = g
                        .nodes
                        .iter()
                        .any(|n| n.name == t.node && matches!(n.op, Op::Conv(_)));
                    let p = match p.conv_bits {
                        Some(bits) if is_conv => ShareParams { bits, ..*p },
                        _ => *p,
                    };
                    let s = SharedTensor::share(&g.weights[&t.weight], mask, p)?;
                    g.weights.insert(t.weight.clone(), s.decode()?);
                    ctx.shared.insert(t.weight.clone(), s);
                }
            }
            PassSpec::ShareFineTune(t) => {
                if ctx.shared.is_empty() {
                    return Err(Error::Invalid(
                        "share_fine_tune needs a share pass before it".into(),
                    ));
                }
                let data = ctx.data.ok_or_else(|| {
                    Error::Invalid("the share_fine_tune pass needs training data".into())
                })?;
                kmeans::finetune(g, &mut ctx.shared, data, t, ctx.on_progress)?;
            }
            PassSpec::LowRank(spec) => {
                return lowrank::pass(g, ctx, spec, bytes_before, macs_before);
            }
            PassSpec::Separable(spec) => {
                return lowrank::separable_pass(g, ctx, spec, bytes_before, macs_before);
            }
            PassSpec::Int8(spec) => {
                return intonly::pass(g, ctx, spec, bytes_before, macs_before);
            }
            PassSpec::PruneFilters(_) | PassSpec::RemoveBlock(_) | PassSpec::MergeLinear(_) => {
                return structured::pass(self, g, ctx, bytes_before, macs_before);
            }
            PassSpec::Lowbit(p) => lowbit::pass(g, ctx, &tg, p)?,
            PassSpec::Qat(spec) => lowbit::qat(g, ctx, &tg, spec)?,
            PassSpec::Distill(spec) => crate::train::distill::pass(g, ctx, spec)?,
            PassSpec::Lottery(spec) => lottery::pass(g, ctx, spec)?,
        }
        let mut layers = Vec::with_capacity(tg.len());
        for (t, b) in tg.iter().zip(before) {
            let w = &g.weights[&t.weight];
            let (encoding, bits, bytes_after) = storage(&t.weight, g, ctx)?;
            layers.push(LayerReport {
                name: t.weight.clone(),
                node: t.node.clone(),
                params: w.len(),
                nonzero: w.iter().filter(|v| **v != 0.0).count(),
                bits,
                bytes_before: b.2,
                bytes_after,
                encoding,
            });
        }
        pass_report(self.name(), g, ctx, layers, bytes_before, macs_before)
    }
}

/// An ordered list of passes, stored as JSON (`{"passes": [{"pass": "prune", "by": "global",
/// "ratio": 0.9}, {"pass": "fine_tune", "epochs": 1}, ...]}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    /// Passes in the order they run.
    pub passes: Vec<PassSpec>,
}

/// A compressed model with everything the passes produced.
#[derive(Clone, Debug)]
pub struct Compressed {
    /// The graph with pruned weights zeroed and quantized weights dequantized.
    pub graph: Graph,
    /// Pruning masks by weight name.
    pub masks: Masks,
    /// Integer codes of quantized weights by name.
    pub quantized: BTreeMap<String, QuantizedTensor>,
    /// Codebooks and indices of shared weights by name.
    pub shared: BTreeMap<String, SharedTensor>,
    /// Low-bit codes by weight name.
    pub lowbit: BTreeMap<String, lowbit::LowBitTensor>,
    /// One report per pass, in order.
    pub reports: Vec<PassReport>,
    /// Summaries of the fine-tuning passes, in order.
    pub finetune: Vec<TrainSummary>,
    /// The integer-only int8 model when the recipe ends with an `int8` pass.
    pub int8: Option<intonly::QGraph>,
    /// Rounds of the lottery passes, in order.
    pub lottery: Vec<lottery::Round>,
}

impl Compressed {
    /// The result as ONNX bytes: a QDQ graph of the integer model when the recipe ended with
    /// `int8` ([`qdq::to_qdq`]); else the graph with linear-quantized and binary/ternary weights
    /// stored as int8/uint8 codes behind `DequantizeLinear` ([`qdq_weights::weights_as_qdq`])
    /// and every other compressed weight decoded to f32 (the dense fallback: k-means, log2 and
    /// DoReFa codes; pruned or thinned layers stay smaller).
    pub fn export_onnx(&self) -> Result<Vec<u8>> {
        crate::format::onnx::export(&self.onnx_graph()?)
    }

    /// The graph [`Compressed::export_onnx`] writes.
    pub fn onnx_graph(&self) -> Result<Graph> {
        match &self.int8 {
            Some(q) => qdq::to_qdq(q),
            None => Ok(qdq_weights::weights_as_qdq(&self.graph, &self.quantized, &self.lowbit)?.0),
        }
    }

    /// Energy per inference of the compressed model ([`energy::estimate`]): stored weight bytes
    /// from the last report, MACs skipping zeros. Weight-only quantization and sharing keep f32
    /// arithmetic (activations are float), so they save memory energy, not compute; the
    /// integer-only `int8` pass switches every layer to int8 arithmetic.
    pub fn energy(&self, table: &energy::EnergyTable) -> Result<energy::EnergyReport> {
        let bytes = match self.reports.last() {
            Some(r) => r.bytes_after,
            None => self.graph.weights.values().map(|t| t.len() * 4).sum(),
        };
        // The integer-only model runs every Gemm/Conv in int8 with int32 accumulation.
        // Binary and ternary weights need only sign flips and adds, power-of-two weights shifts
        // and adds (activations stay float).
        let int8 = self.int8.is_some();
        let arith = |w: &str| {
            if int8 {
                return Some(energy::Arith::Int8);
            }
            match self.lowbit.get(w).map(|t| t.scheme) {
                Some(lowbit::Scheme::Binary | lowbit::Scheme::Ternary) => {
                    Some(energy::Arith::SignAdd)
                }
                Some(lowbit::Scheme::Log2) => Some(energy::Arith::ShiftAdd),
                _ => None,
            }
        };
        energy::estimate(&self.graph, &arith, bytes, table)
    }
}

impl Recipe {
    /// Whether some pass trains, so [`Recipe::apply`] needs training data.
    pub fn needs_data(&self) -> bool {
        self.passes.iter().any(|p| match p {
            // int8 calibrates activation ranges on the training data.
            PassSpec::FineTune(_) | PassSpec::ShareFineTune(_) | PassSpec::Int8(_) => true,
            PassSpec::Prune(_)
            | PassSpec::Quantize(_)
            | PassSpec::Share(_)
            | PassSpec::LowRank(_)
            | PassSpec::Separable(_)
            | PassSpec::PruneFilters(_)
            | PassSpec::RemoveBlock(_)
            | PassSpec::MergeLinear(_)
            | PassSpec::Lowbit(_) => false,
            PassSpec::Qat(_) | PassSpec::Distill(_) | PassSpec::Lottery(_) => true,
        })
    }

    /// Parses a recipe from JSON.
    pub fn from_json(s: &str) -> Result<Self> {
        serde_json::from_str(s).map_err(|e| Error::Decode {
            what: "compression recipe",
            detail: e.to_string(),
        })
    }

    /// Writes the recipe as JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::Invalid(e.to_string()))
    }

    /// Runs every pass on a copy of `g`. `data` feeds the fine-tune passes; when `eval` is given,
    /// each report carries the accuracy before and after its pass.
    pub fn apply(
        &self,
        g: &Graph,
        data: Option<&Dataset>,
        eval: Option<&Dataset>,
        on_progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<Compressed> {
        self.apply_with(g, data, eval, BTreeMap::new(), on_progress)
    }

    /// [`Recipe::apply`] with named graphs for the passes that need one (`distill` teachers,
    /// `lottery` initial weights; see [`PassCtx::graphs`]).
    pub fn apply_with(
        &self,
        g: &Graph,
        data: Option<&Dataset>,
        eval: Option<&Dataset>,
        graphs: BTreeMap<String, Graph>,
        on_progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<Compressed> {
        let mut graph = g.clone();
        let mut ctx = PassCtx::new(data, on_progress);
        ctx.original = Some(g);
        ctx.graphs = graphs;
        ctx.eval = eval;
        let accuracy = |g: &Graph| -> Result<Option<f32>> {
            eval.map(|d| crate::metrics::evaluate(g, d, 256).map(|r| r.accuracy))
                .transpose()
        };
        let mut acc = accuracy(&graph)?;
        let mut reports = Vec::with_capacity(self.passes.len());
        for p in &self.passes {
            let mut r = p.apply(&mut graph, &mut ctx)?;
            r.accuracy_before = acc;
            // After `int8` the accuracy is the integer executor's, not the float graph's.
            acc = match (&ctx.int8, eval) {
                (Some(q), Some(d)) => Some(q.evaluate(d, 256)?.accuracy),
                _ => accuracy(&graph)?,
            };
            r.accuracy_after = acc;
            reports.push(r);
        }
        Ok(Compressed {
            graph,
            masks: ctx.masks,
            quantized: ctx.quantized,
            shared: ctx.shared,
            lowbit: ctx.lowbit,
            reports,
            finetune: ctx.finetune,
            int8: ctx.int8,
            lottery: ctx.lottery,
        })
    }
}

//! Execution plans: `Graph → Plan`, one kernel per node chosen from the form of its weights and
//! the host, weights packed once when the plan is built.
//!
//! The choice is the pure function [`choose`] of the node's [`WeightForm`] and the host's
//! [`Features`], unit-tested on any machine. Nodes without a fast kernel run the reference op
//! ([`crate::ops`]), which stays the oracle: [`Plan::run`] must agree with [`crate::exec::run`]
//! (tests compare them on every zoo model, dense and pruned).
//!
//! Before choosing, [`fuse::fuse_qdq`] turns the `DequantizeLinear → Conv/Gemm →
//! QuantizeLinear` pattern of statically quantized graphs into `QLinearConv`.
//!
//! Today's kernels: the integer ops (MatMulInteger, QLinearMatMul, ConvInteger, QLinearConv) with
//! a constant weight run on the int8 GEMM ([`kernels::int8`], convolutions by int8 im2col) with
//! the weight packed once; a pruned Gemm (density ≤ [`SPARSE_MAX_DENSITY`]) runs the CSR kernel
//! ([`kernels::sparse`]); a dense Gemm runs the packed SIMD GEMM where that beats the reference
//! (wasm `simd128`), and the reference matrix product otherwise (natively the reference uses
//! `matrixmultiply`, which measured faster than our AVX2 kernel: docs/KERNELS.md).

mod conv;
mod eltwise;
pub mod fuse;

pub use eltwise::{Act, add_plan, repeat_pattern};

use crate::graph::{GemmAttrs, Graph, Node, Op};
use crate::kernels::binary::{BinaryMatrix, pack_signs};
use crate::kernels::codebook::CodebookMatrix;
use crate::kernels::prepacked::PackedB;
use crate::kernels::sparse::Csr;
use crate::kernels::{self, Features, KernelKind};
use crate::ops::{self, Mode};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// Above this fraction of non-zero weights a Gemm stays dense: at 30 % density the CSR kernel
/// does 30 % of the multiply-adds but with gathered loads.
pub const SPARSE_MAX_DENSITY: f32 = 0.3;

/// The largest batch for which a planned Gemm (sparse, codebook or dense) uses its kernel;
/// larger batches run the reference product on the (zero-filled) dense weight. Natively the
/// reference product is `matrixmultiply` at near-peak speed: measured break-even against the
/// CSR kernel on LeNet-300-100 pruned to 8 % is about 16 images, and against the pre-packed
/// AVX2 GEMM between 8 and 64 (which wins 2–3× at batch 1: docs/KERNELS.md), so the limit is 8;
/// in a wasm `simd128` build the reference product has no SIMD and the planned kernels are used
/// at every batch. Pure.
pub fn sparse_max_batch(features: Features) -> usize {
    if features.simd128 { usize::MAX } else { 8 }
}

/// The form of a node's weight, as the plan sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WeightForm {
    /// No stored weight the plan can use (activations, pooling, weights computed at run time).
    None,
    /// A 2-D f32 weight with this fraction of non-zero values.
    Dense2d {
        /// `nonzero / len`.
        density: f32,
    },
    /// The constant int8/uint8 weight (and weight zero point) of an integer op.
    Int8,
    /// A 2-D f32 weight whose every output row holds only `±α_j` (a binarized layer);
    /// `sign_input` when the layer's input comes from a `Sign` node (binary activations).
    Binary {
        /// The input is `Sign(·)`.
        sign_input: bool,
    },
    /// The constant 4-D f32 filters of a `Conv`; `depthwise` when each group has one input
    /// channel.
    Filters {
        /// One input channel per group (and more than one group).
        depthwise: bool,
    },
    /// The four constant per-channel statistics of an inference `BatchNormalization`, all of
    /// one length.
    Channels,
    /// A 2-D f32 weight with at most 256 distinct values (k-means shared or per-tensor
    /// quantized).
    Codebook {
        /// Distinct values.
        entries: usize,
        /// `nonzero / len`.
        density: f32,
    },
}

/// Largest codebook the plan runs on the codebook kernel: with at most 16 entries the table
/// stays in registers / L1 and the codes take half a byte of information.
pub const CODEBOOK_MAX_ENTRIES: usize = 16;

/// What executes one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// The reference op.
    Reference,
    /// Dense GEMM of this kind on `op(B)` packed once into its panels.
    DenseGemm(KernelKind),
    /// im2col straight into the panels and the GEMM of this kind, filters packed once.
    DenseConv(KernelKind),
    /// Direct depthwise convolution (one input channel per group).
    Depthwise,
    /// Max pooling without recording the argmax (inference only).
    MaxPool,
    /// Compressed-sparse-row product over the kept weights.
    SparseGemm,
    /// The int8 GEMM on a packed int8 weight (i32 sums), for MatMulInteger and QLinearMatMul.
    Int8Gemm,
    /// int8 im2col and the int8 GEMM, for ConvInteger and QLinearConv.
    Int8Conv,
    /// XNOR-popcount on sign-packed weights and activations (binary weights after `Sign`).
    Xnor,
    /// Codes into a per-layer codebook, decoded on the fly.
    Codebook,
    /// Relu, Clip, Sigmoid, Tanh or LeakyRelu, in the input's buffer when it dies here.
    Activation,
    /// `Add` of two same-shape tensors or of a repeated block (a bias), in place when it can.
    Add,
    /// Inference batch norm as a per-channel `x·k + off`, `k` and `off` computed once.
    BatchNorm,
    /// Flatten, Reshape, Squeeze, Unsqueeze, Dropout: the input's buffer under a new shape.
    View,
}

impl Kernel {
    /// Short stable name for reports and the page ("which kernel each layer runs on").
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Reference => "reference",
            Kernel::DenseGemm(k) => match k {
                KernelKind::Scalar => "gemm-scalar",
                KernelKind::Packed => "gemm-packed",
                // The relaxed-SIMD build runs the relaxed micro-kernel under this kind.
                KernelKind::Simd128 if kernels::RELAXED_SIMD => "gemm-relaxed-simd",
                KernelKind::Simd128 => "gemm-simd128",
                KernelKind::Avx2Fma => "gemm-avx2-fma",
            },
            Kernel::DenseConv(k) => match k {
                KernelKind::Scalar => "conv-scalar",
                KernelKind::Packed => "conv-packed",
                KernelKind::Simd128 if kernels::RELAXED_SIMD => "conv-relaxed-simd",
                KernelKind::Simd128 => "conv-simd128",
                KernelKind::Avx2Fma => "conv-avx2-fma",
            },
            Kernel::Depthwise => "depthwise",
            Kernel::MaxPool => "maxpool",
            Kernel::SparseGemm => "csr",
            Kernel::Int8Gemm => "int8-gemm",
            Kernel::Int8Conv => "int8-conv",
            Kernel::Xnor => "xnor",
            Kernel::Codebook => "codebook",
            Kernel::Activation => "activation",
            Kernel::Add => "add",
            Kernel::BatchNorm => "batchnorm",
            Kernel::View => "view",
        }
    }
}

/// The kernel for a node with `op` and weight `form` on a host with `features`. Pure.
pub fn choose(op: &Op, form: WeightForm, features: Features) -> Kernel {
    match (op, form) {
        (Op::Gemm(a), WeightForm::Binary { sign_input: true }) if !a.trans_a => Kernel::Xnor,
        (Op::Gemm(_), WeightForm::Binary { sign_input: false }) => {
            choose(op, WeightForm::Dense2d { density: 1.0 }, features)
        }
        (Op::Gemm(a), WeightForm::Codebook { entries, density }) if !a.trans_a => {
            if density > SPARSE_MAX_DENSITY && entries <= CODEBOOK_MAX_ENTRIES {
                Kernel::Codebook
            } else {
                choose(op, WeightForm::Dense2d { density }, features)
            }
        }
        (Op::Gemm(a), WeightForm::Dense2d { density }) if !a.trans_a => {
            if density <= SPARSE_MAX_DENSITY {
                Kernel::SparseGemm
            } else {
                Kernel::DenseGemm(kernels::select(features))
            }
        }
        (Op::Conv(_), WeightForm::Filters { depthwise: true }) => Kernel::Depthwise,
        (Op::MaxPool(_), _) => Kernel::MaxPool,
        (Op::Conv(_), WeightForm::Filters { depthwise: false }) => {
            Kernel::DenseConv(kernels::select(features))
        }
        (Op::MatMulInteger { .. } | Op::QLinearMatMul { .. }, WeightForm::Int8) => Kernel::Int8Gemm,
        (Op::ConvInteger { .. } | Op::QLinearConv { .. }, WeightForm::Int8) => Kernel::Int8Conv,
        (Op::Relu | Op::Clip { .. } | Op::Sigmoid | Op::Tanh | Op::LeakyRelu { .. }, _) => {
            Kernel::Activation
        }
        (Op::Add, _) => Kernel::Add,
        (Op::BatchNorm { .. }, WeightForm::Channels) => Kernel::BatchNorm,
        (
            Op::Flatten { .. }
            | Op::Reshape { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Dropout { .. },
            _,
        ) => Kernel::View,
        _ => Kernel::Reference,
    }
}

/// Weights packed for a kernel.
#[derive(Clone, Debug)]
enum Packed {
    None,
    /// `op(B)` (`k × n`) in the panels of a GEMM kind.
    Dense(PackedB),
    /// A convolution's filters in the strips of a GEMM kind, per group.
    Conv(conv::PackedConv),
    /// `op(B)ᵀ` (`n × k`, one row per output) in CSR.
    Sparse(Csr),
    /// An integer op's int8 weight, packed.
    Int8(Box<ops::PreparedInt8>),
    /// `op(B)ᵀ`'s signs and per-row `α`.
    Xnor(BinaryMatrix),
    /// `op(B)ᵀ` as codes into its distinct values.
    Codebook(CodebookMatrix),
    /// A batch norm's per-channel factor and offset.
    Affine {
        k: Vec<f32>,
        off: Vec<f32>,
    },
}

/// Where a node input (or a graph output) comes from, resolved when the plan is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Src {
    /// An absent optional input.
    Absent,
    /// A value computed by an earlier node: its slot.
    Value(usize),
    /// A constant of the graph, looked up by name.
    Weight,
    /// A graph input, looked up by name among the run's inputs.
    Input,
}

#[derive(Clone, Debug)]
struct Step {
    node: usize,
    kernel: Kernel,
    packed: Packed,
    /// One per node input.
    srcs: Vec<Src>,
    /// The slots of the node's outputs.
    outs: Vec<usize>,
    /// Slots read for the last time here (or never read), recycled after the step.
    frees: Vec<usize>,
    /// Per input: a value that dies here and is read by no other input of the node, so an
    /// elementwise kernel may compute in its buffer.
    dies: Vec<bool>,
    /// An activation fused into this node (applied to its output before anyone reads it).
    act: Option<Act>,
}

/// A graph ready to run: one kernel per node, weights packed, every value given a slot and a
/// last reader so that its buffer is recycled as soon as it dies.
#[derive(Clone, Debug)]
pub struct Plan {
    graph: Graph,
    steps: Vec<Step>,
    sparse_max_batch: usize,
    slots: usize,
    /// Where each graph output comes from.
    outputs: Vec<Src>,
}

/// Freed intermediate buffers, handed to the next planned kernel that needs one as large.
#[derive(Default)]
struct Pool {
    bufs: Vec<Vec<f32>>,
}

impl Pool {
    /// Keeps the buffer of a dead value (at most a few, the largest ones).
    fn give(&mut self, t: Tensor) {
        self.keep(t.into_raw_vec_and_offset().0);
    }

    /// Keeps a scratch buffer (see [`Pool::give`]).
    fn keep(&mut self, v: Vec<f32>) {
        if v.capacity() == 0 {
            return;
        }
        if self.bufs.len() == 8 {
            match self
                .bufs
                .iter()
                .enumerate()
                .min_by_key(|(_, b)| b.capacity())
            {
                Some((i, b)) if b.capacity() < v.capacity() => self.bufs[i] = v,
                _ => {}
            }
            return;
        }
        self.bufs.push(v);
    }

    /// A zeroed buffer of `len` values: the smallest kept one that fits, or a new one.
    fn take(&mut self, len: usize) -> Vec<f32> {
        let mut v = self.take_empty(len);
        v.resize(len, 0.0);
        v
    }

    /// An empty buffer with room for `len` values (to be filled by `extend`).
    fn take_empty(&mut self, len: usize) -> Vec<f32> {
        let fit = self
            .bufs
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        let mut v = match fit {
            Some(i) => self.bufs.swap_remove(i),
            None => Vec::with_capacity(len),
        };
        v.clear();
        v
    }
}

/// Slots, sources, last readers and in-place steps for the nodes of `g` (in order), and the
/// sources of its outputs.
/// One node's wiring: its input sources, output slots, slots freed after it, and which inputs
/// die at it (see [`Step::dies`]).
type Wiring = (Vec<Src>, Vec<usize>, Vec<usize>, Vec<bool>);

fn wire(g: &Graph) -> (Vec<Wiring>, usize, Vec<Src>) {
    use std::collections::HashMap;
    let mut slot_of: HashMap<&str, usize> = HashMap::new();
    let mut last: Vec<usize> = Vec::new();
    let src = |name: &str, slot_of: &HashMap<&str, usize>| {
        if name.is_empty() {
            Src::Absent
        } else if let Some(&s) = slot_of.get(name) {
            Src::Value(s)
        } else if g.weights.contains_key(name) {
            Src::Weight
        } else {
            Src::Input
        }
    };
    let mut wired = Vec::with_capacity(g.nodes.len());
    for (i, n) in g.nodes.iter().enumerate() {
        let srcs: Vec<Src> = n.inputs.iter().map(|x| src(x, &slot_of)).collect();
        for s in &srcs {
            if let Src::Value(v) = s {
                last[*v] = i;
            }
        }
        let outs: Vec<usize> = n
            .outputs
            .iter()
            .map(|o| {
                let s = last.len();
                last.push(i);
                slot_of.insert(o.as_str(), s);
                s
            })
            .collect();
        wired.push((srcs, outs, Vec::new(), Vec::new()));
    }
    let outputs: Vec<Src> = g.outputs.iter().map(|o| src(o, &slot_of)).collect();
    let kept: std::collections::HashSet<usize> = outputs
        .iter()
        .filter_map(|s| match s {
            Src::Value(v) => Some(*v),
            _ => None,
        })
        .collect();
    for (slot, &at) in last.iter().enumerate() {
        if !kept.contains(&slot) {
            wired[at].2.push(slot);
        }
    }
    for (srcs, _, frees, dies) in &mut wired {
        *dies = srcs
            .iter()
            .map(|s| match *s {
                Src::Value(v) => {
                    frees.contains(&v) && srcs.iter().filter(|t| **t == *s).count() == 1
                }
                _ => false,
            })
            .collect();
    }
    (wired, last.len(), outputs)
}

/// Values produced by `Sign` nodes (binary activations).
fn sign_values(g: &Graph) -> std::collections::HashSet<&str> {
    g.nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Sign))
        .flat_map(|n| n.outputs.iter().map(String::as_str))
        .collect()
}

/// `α_j` of every output column of `op(B)` (`k×n`) when each column holds only `±α_j`.
fn binary_columns(k: usize, n: usize, b: &[f32]) -> Option<Vec<f32>> {
    if k == 0 || n == 0 {
        return None;
    }
    let alpha: Vec<f32> = b[..n].iter().map(|v| v.abs()).collect();
    if alpha.iter().any(|a| !(a.is_finite() && *a > 0.0)) {
        return None;
    }
    b.chunks(n)
        .all(|row| row.iter().zip(&alpha).all(|(v, a)| v.abs() == *a))
        .then_some(alpha)
}

/// The distinct values of `w`, sorted, when there are at most 256 of them.
fn distinct_values(w: &[f32]) -> Option<Vec<f32>> {
    let mut seen: Vec<u32> = Vec::new();
    for v in w {
        let b = v.to_bits();
        if !v.is_finite() {
            return None;
        }
        if !seen.contains(&b) {
            if seen.len() == 256 {
                return None;
            }
            seen.push(b);
        }
    }
    let mut out: Vec<f32> = seen.into_iter().map(f32::from_bits).collect();
    out.sort_by(f32::total_cmp);
    Some(out)
}

fn form(g: &Graph, n: &Node, signs: &std::collections::HashSet<&str>) -> WeightForm {
    if let Some((w, z)) = ops::int8_weight_slots(&n.op) {
        let constant = |i: usize| n.inputs.get(i).is_some_and(|s| g.weights.contains_key(s));
        let absent = |i: usize| n.inputs.get(i).is_none_or(String::is_empty);
        return if constant(w) && (absent(z) || constant(z)) {
            WeightForm::Int8
        } else {
            WeightForm::None
        };
    }
    if matches!(n.op, Op::BatchNorm { .. }) {
        return match eltwise::batch_norm_constants(g, n) {
            Some(_) => WeightForm::Channels,
            None => WeightForm::None,
        };
    }
    match (&n.op, n.inputs.get(1).and_then(|w| g.weights.get(w))) {
        (Op::Conv(a), Some(w)) if w.ndim() == 4 => WeightForm::Filters {
            depthwise: conv::is_depthwise(w.shape(), a.groups),
        },
        (Op::Gemm(a), Some(w)) if w.ndim() == 2 => {
            let density = w.iter().filter(|v| **v != 0.0).count() as f32 / w.len().max(1) as f32;
            let (k, nn, b) = op_b(a, w);
            if binary_columns(k, nn, &b).is_some() {
                let sign_input = n.inputs.first().is_some_and(|x| signs.contains(x.as_str()));
                return WeightForm::Binary { sign_input };
            }
            match distinct_values(&b) {
                Some(v) => WeightForm::Codebook {
                    entries: v.len(),
                    density,
                },
                None => WeightForm::Dense2d { density },
            }
        }
        _ => WeightForm::None,
    }
}

/// The transpose of a row-major `k×n` matrix (one row per output).
fn transpose(k: usize, n: usize, b: &[f32]) -> Vec<f32> {
    let mut bt = vec![0.0; k * n];
    for p in 0..k {
        for j in 0..n {
            bt[j * k + p] = b[p * n + j];
        }
    }
    bt
}

/// `op(B)` of a Gemm as `(k, n, row-major k×n)`.
fn op_b(a: &GemmAttrs, w: &Tensor) -> (usize, usize, Vec<f32>) {
    let (r, c) = (w.shape()[0], w.shape()[1]);
    let data = crate::tensor::to_contiguous(w);
    if a.trans_b {
        let mut b = vec![0.0; r * c];
        for i in 0..r {
            for j in 0..c {
                b[j * r + i] = data[i * c + j];
            }
        }
        (c, r, b)
    } else {
        (r, c, data.into_owned())
    }
}

impl Plan {
    /// Plans `g` for this host.
    pub fn new(g: &Graph) -> Result<Plan> {
        Plan::for_features(g, Features::detect())
    }

    /// Plans `g` as if the host had `features` (kernels it cannot run fall back to the
    /// reference).
    pub fn for_features(g: &Graph, features: Features) -> Result<Plan> {
        let mut graph = g.clone();
        graph.validate()?;
        if fuse::fuse_qdq(&mut graph)? > 0 {
            graph.validate()?;
            graph.dtypes()?;
        }
        // BatchNorm into the Conv/Gemm before it, then activations into the Conv/Gemm.
        crate::graph::fold::fold_batchnorm(&mut graph)?;
        let acts = eltwise::fuse_activations(&mut graph);
        let mut steps = Vec::with_capacity(graph.nodes.len());
        let signs = sign_values(&graph);
        let (wired, slots, outputs) = wire(&graph);
        for ((i, n), (srcs, outs, frees, dies)) in graph.nodes.iter().enumerate().zip(wired) {
            let mut kernel = choose(&n.op, form(&graph, n, &signs), features);
            if matches!(kernel, Kernel::MaxPool | Kernel::View | Kernel::Activation)
                && n.outputs.len() != 1
            {
                // MaxPool's optional `Indices`, Dropout's mask: the reference computes them.
                kernel = Kernel::Reference;
            }
            if let Kernel::DenseGemm(k) | Kernel::DenseConv(k) = kernel
                && kernels::Kernels::for_kind(k).is_none()
            {
                kernel = Kernel::Reference;
            }
            let packed = match (kernel, &n.op) {
                (Kernel::DenseGemm(kind), Op::Gemm(a)) => {
                    let (k, nn, b) = op_b(a, &graph.weights[&n.inputs[1]]);
                    Packed::Dense(PackedB::new(kind, k, nn, &b)?)
                }
                (Kernel::DenseConv(kind), Op::Conv(a)) => Packed::Conv(conv::PackedConv::new(
                    kind,
                    a.groups,
                    &graph.weights[&n.inputs[1]],
                )?),
                (Kernel::SparseGemm, Op::Gemm(a)) => {
                    let (k, nn, b) = op_b(a, &graph.weights[&n.inputs[1]]);
                    // CSR wants one row per output: op(B)ᵀ.
                    Packed::Sparse(Csr::from_dense(nn, k, &transpose(k, nn, &b))?)
                }
                (Kernel::Xnor, Op::Gemm(a)) => {
                    let (k, nn, b) = op_b(a, &graph.weights[&n.inputs[1]]);
                    let alpha = binary_columns(k, nn, &b).unwrap_or_default();
                    Packed::Xnor(BinaryMatrix::from_f32(nn, k, &transpose(k, nn, &b), alpha)?)
                }
                (Kernel::Codebook, Op::Gemm(a)) => {
                    let (k, nn, b) = op_b(a, &graph.weights[&n.inputs[1]]);
                    let book = distinct_values(&b).unwrap_or_default();
                    let bt = transpose(k, nn, &b);
                    let codes: Vec<u8> = bt
                        .iter()
                        .map(|v| {
                            book.binary_search_by(|e| e.total_cmp(v))
                                .map_or(0, |i| i as u8)
                        })
                        .collect();
                    let bits = (usize::BITS - book.len().saturating_sub(1).leading_zeros()).max(1);
                    Packed::Codebook(CodebookMatrix::new(nn, k, bits as u8, codes, book)?)
                }
                (Kernel::Int8Gemm | Kernel::Int8Conv, op) => {
                    let (w, z) = ops::int8_weight_slots(op).unwrap_or((1, 3));
                    let weight = &graph.weights[&n.inputs[w]];
                    let zp = n.inputs.get(z).and_then(|s| graph.weights.get(s));
                    match ops::PreparedInt8::new(n, weight, zp)? {
                        Some(p) => Packed::Int8(Box::new(p)),
                        None => {
                            kernel = Kernel::Reference;
                            Packed::None
                        }
                    }
                }
                (Kernel::BatchNorm, _) => match eltwise::batch_norm_constants(&graph, n) {
                    Some((k, off)) => Packed::Affine { k, off },
                    None => {
                        kernel = Kernel::Reference;
                        Packed::None
                    }
                },
                _ => Packed::None,
            };
            steps.push(Step {
                node: i,
                kernel,
                packed,
                srcs,
                outs,
                frees,
                dies,
                act: acts.get(i).copied().flatten(),
            });
        }
        Ok(Plan {
            graph,
            steps,
            sparse_max_batch: sparse_max_batch(features),
            slots,
            outputs,
        })
    }

    /// `(node name, kernel name)` for every node, in order.
    pub fn kernels(&self) -> Vec<(String, &'static str)> {
        self.steps
            .iter()
            .map(|s| (self.graph.nodes[s.node].name.clone(), s.kernel.name()))
            .collect()
    }

    /// The planned graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Runs the plan on `inputs` (checked like [`crate::exec::run`]) and returns the outputs.
    ///
    /// Each value lives in its slot until its last reader has run; its buffer then goes to a
    /// small pool that the planned kernels take their outputs from, and a `Relu` whose input
    /// dies at it works in that input's buffer.
    pub fn run(&self, inputs: &[(&str, &Tensor)]) -> Result<Vec<Tensor>> {
        self.run_inner(inputs, None)
    }

    /// [`Plan::run`] that also returns the time each step took, in the unit of `clock` (a
    /// monotonic clock: `Instant` natively, `performance.now()` in the browser), one entry per
    /// [`Plan::kernels`] row. A probe for finding the nodes that dominate a model.
    pub fn run_timed(
        &self,
        inputs: &[(&str, &Tensor)],
        clock: &mut dyn FnMut() -> f64,
    ) -> Result<(Vec<Tensor>, Vec<f64>)> {
        let mut times = Vec::with_capacity(self.steps.len());
        let outs = self.run_inner(inputs, Some((clock, &mut times)))?;
        Ok((outs, times))
    }

    fn run_inner(
        &self,
        inputs: &[(&str, &Tensor)],
        mut probe: Option<(&mut dyn FnMut() -> f64, &mut Vec<f64>)>,
    ) -> Result<Vec<Tensor>> {
        crate::exec::check_inputs(&self.graph, inputs)?;
        let mut vals: Vec<Option<Tensor>> = (0..self.slots).map(|_| None).collect();
        let mut pool = Pool::default();
        for step in &self.steps {
            let t0 = probe.as_mut().map_or(0.0, |(clock, _)| clock());
            let n = &self.graph.nodes[step.node];
            let fast = fast_elementwise(step, n, &gather(step, n, &self.graph, &vals, inputs));
            let outs = match fast {
                Some(fast) => {
                    // The input that gives its buffer leaves its slot (it dies here anyway).
                    let owned = fast.pick.and_then(|i| match step.srcs.get(i) {
                        Some(&Src::Value(v)) => vals[v].take(),
                        _ => None,
                    });
                    let ins = gather(step, n, &self.graph, &vals, inputs);
                    vec![elementwise(step, n, fast, owned, &ins, &mut pool)?]
                }
                None => {
                    let ins = gather(step, n, &self.graph, &vals, inputs);
                    self.step(step, n, &ins, &mut pool)?
                }
            };
            if outs.len() != step.outs.len() {
                return Err(Error::Graph(format!(
                    "node `{}` returned {} values for {} outputs",
                    n.name,
                    outs.len(),
                    step.outs.len()
                )));
            }
            for (&slot, t) in step.outs.iter().zip(outs) {
                vals[slot] = Some(t);
            }
            for &f in &step.frees {
                if let Some(t) = vals[f].take() {
                    pool.give(t);
                }
            }
            if let Some((clock, times)) = probe.as_mut() {
                let t1 = clock();
                times.push(t1 - t0);
            }
        }
        self.outputs
            .iter()
            .zip(&self.graph.outputs)
            .map(|(src, name)| {
                let t = match *src {
                    Src::Value(v) => vals.get_mut(v).and_then(Option::take),
                    Src::Weight => self.graph.weights.get(name).cloned(),
                    Src::Input => inputs
                        .iter()
                        .find(|(k, _)| *k == name)
                        .map(|(_, t)| (*t).clone()),
                    Src::Absent => None,
                };
                t.ok_or_else(|| Error::Graph(format!("output `{name}` was not computed")))
            })
            .collect()
    }

    /// One node on its planned kernel, its fused activation applied.
    fn step(
        &self,
        step: &Step,
        n: &Node,
        ins: &[Option<&Tensor>],
        pool: &mut Pool,
    ) -> Result<Vec<Tensor>> {
        let (mut outs, fused) = self.step_kernel(step, n, ins, pool)?;
        if let (Some(act), false, Some(t)) = (step.act, fused, outs.first_mut()) {
            match t.as_slice_mut() {
                Some(s) => act.apply(s),
                None => t.mapv_inplace(|v| act.one(v)),
            }
        }
        Ok(outs)
    }

    /// One node on its planned kernel; `true` when the kernel applied the fused activation.
    fn step_kernel(
        &self,
        step: &Step,
        n: &Node,
        ins: &[Option<&Tensor>],
        pool: &mut Pool,
    ) -> Result<(Vec<Tensor>, bool)> {
        let batch = ins
            .first()
            .copied()
            .flatten()
            .map_or(0, |t| t.shape().first().copied().unwrap_or(0));
        match (&step.packed, &n.op) {
            (Packed::None, Op::Conv(a)) if step.kernel == Kernel::Depthwise => Ok((
                vec![conv::depthwise(
                    n,
                    a,
                    ops::get(n, ins, 0)?,
                    ops::get(n, ins, 1)?,
                    ops::opt(ins, 2),
                    step.act,
                    pool,
                )?],
                true,
            )),
            (Packed::None, Op::MaxPool(a)) if step.kernel == Kernel::MaxPool => {
                let x = ops::get(n, ins, 0)?;
                let out = pool.take(0);
                Ok((vec![ops::max_pool_eval(n, a, x, out)?], false))
            }
            (Packed::None, _) => Ok((ops::forward(n, ins, Mode::Eval)?.0, false)),
            (Packed::Int8(p), _) if ops::packed_matmul_applies(n, ins) => {
                Ok((p.run(n, ins)?, false))
            }
            (Packed::Int8(_), _) => Ok((ops::forward(n, ins, Mode::Eval)?.0, false)),
            // XNOR needs every activation at ±1; a Sign of an exact 0 gives 0.
            (Packed::Xnor(_), _)
                if ins
                    .first()
                    .copied()
                    .flatten()
                    .is_none_or(|x| x.iter().any(|v| *v == 0.0)) =>
            {
                Ok((ops::forward(n, ins, Mode::Eval)?.0, false))
            }
            // The codebook kernel has the same profile: natively it wins at small batches
            // (7–11× at batch 1 on LeNet-300-100) and loses to `matrixmultiply` at 64.
            (Packed::Sparse(_) | Packed::Codebook(_) | Packed::Dense(_), _)
                if batch > self.sparse_max_batch =>
            {
                Ok((ops::forward(n, ins, Mode::Eval)?.0, false))
            }
            (Packed::Conv(p), Op::Conv(a)) => Ok((
                vec![p.run(
                    n,
                    a,
                    ops::get(n, ins, 0)?,
                    ops::get(n, ins, 1)?,
                    ops::opt(ins, 2),
                    step.act,
                    pool,
                )?],
                true,
            )),
            (p, Op::Gemm(a)) => Ok((vec![gemm(n, a, p, ins, step.act, pool)?], true)),
            _ => Ok((ops::forward(n, ins, Mode::Eval)?.0, false)),
        }
    }
}

/// A planned Gemm: `alpha · A · op(B) + beta · C` with `op(B)` packed.
fn gemm(
    node: &Node,
    at: &GemmAttrs,
    p: &Packed,
    ins: &[Option<&Tensor>],
    act: Option<Act>,
    pool: &mut Pool,
) -> Result<Tensor> {
    let a = ops::get(node, ins, 0)?;
    let (k, n) = match p {
        Packed::Dense(b) => (b.k(), b.n()),
        Packed::Sparse(c) => (c.cols(), c.rows()),
        Packed::Xnor(b) => (b.k(), b.rows()),
        Packed::Codebook(c) => (c.cols(), c.rows()),
        Packed::None | Packed::Int8(_) | Packed::Conv(_) | Packed::Affine { .. } => {
            return Err(Error::Invalid("gemm: no f32 weight packed".into()));
        }
    };
    if a.ndim() != 2 || a.shape()[1] != k {
        return Err(Error::shape(
            &node.name,
            "Gemm",
            format!("A must be [M, {k}]"),
            &[a.shape()],
        ));
    }
    let m = a.shape()[0];
    let x = crate::tensor::to_contiguous(a);
    let mut y = pool.take(
        m.checked_mul(n)
            .ok_or_else(|| Error::shape(&node.name, "Gemm", "output too large", &[a.shape()]))?,
    );
    match p {
        Packed::Dense(b) => b.matmul(m, &x, &mut y)?,
        Packed::Sparse(c) => c.matmul_t(m, &x, &mut y)?,
        Packed::Xnor(b) => b.matmul_t(m, &pack_signs(m, k, &x)?, &[], &mut y)?,
        Packed::Codebook(c) => c.matmul_t(m, &x, &mut y)?,
        Packed::None | Packed::Int8(_) | Packed::Conv(_) | Packed::Affine { .. } => {}
    }
    if at.alpha != 1.0 {
        y.iter_mut().for_each(|v| *v *= at.alpha);
    }
    if let Some(c) = ops::opt(ins, 2).filter(|_| at.beta != 0.0) {
        // A bias row (`[n]` or `[1, n]`, the usual case) is added slice by slice: a broadcast
        // iterator over `IxDyn` costs more than the product at small sizes.
        if c.len() == n
            && n > 0
            && c.shape().last() == Some(&n)
            && let Some(row) = c.as_slice()
        {
            for out in y.chunks_exact_mut(n) {
                for (v, cv) in out.iter_mut().zip(row) {
                    *v += at.beta * cv;
                }
                if let Some(act) = act {
                    act.apply(out);
                }
            }
            return Tensor::from_shape_vec(ndarray::IxDyn(&[m, n]), y)
                .map_err(|e| Error::Invalid(e.to_string()));
        }
        let cb = c.broadcast(ndarray::IxDyn(&[m, n])).ok_or_else(|| {
            Error::shape(
                &node.name,
                "Gemm",
                "C does not broadcast",
                &[c.shape(), &[m, n]],
            )
        })?;
        for (v, cv) in y.iter_mut().zip(cb.iter()) {
            *v += at.beta * cv;
        }
    }
    if let Some(act) = act {
        act.apply(&mut y);
    }
    Tensor::from_shape_vec(ndarray::IxDyn(&[m, n]), y).map_err(|e| Error::Invalid(e.to_string()))
}

/// The tensors a step reads (`None` for an absent input or a value already taken).
fn gather<'a>(
    step: &Step,
    n: &Node,
    g: &'a Graph,
    vals: &'a [Option<Tensor>],
    inputs: &[(&str, &'a Tensor)],
) -> Vec<Option<&'a Tensor>> {
    step.srcs
        .iter()
        .zip(&n.inputs)
        .map(|(src, name)| match *src {
            Src::Absent => None,
            Src::Value(v) => vals.get(v).and_then(Option::as_ref),
            Src::Weight => g.weights.get(name),
            Src::Input => inputs.iter().find(|(k, _)| *k == name).map(|(_, t)| *t),
        })
        .collect()
}

/// How a planned elementwise step runs: the input whose buffer it takes, and for `Add` the
/// input with the output's shape and the repeat of the other ([`add_plan`]).
#[derive(Clone, Copy, Debug)]
struct Fast {
    pick: Option<usize>,
    add: (usize, usize, usize),
}

/// `Some` when `step` is an elementwise kernel that takes these inputs; `None` runs the
/// reference op (which reports any error).
fn fast_elementwise(step: &Step, n: &Node, ins: &[Option<&Tensor>]) -> Option<Fast> {
    let dies = |i: usize| step.dies.get(i) == Some(&true);
    let x = ins.first().copied().flatten()?;
    let one = Fast {
        pick: dies(0).then_some(0),
        add: (0, 0, 0),
    };
    match (step.kernel, &step.packed) {
        (Kernel::Activation, _) if Act::of(&n.op).is_some() => Some(one),
        (Kernel::View, _) => Some(one),
        (Kernel::BatchNorm, Packed::Affine { k, .. })
            if eltwise::batch_norm_applies(k.len(), x.shape()) =>
        {
            Some(one)
        }
        (Kernel::Add, _) => {
            let y = ins.get(1).copied().flatten()?;
            let (big, inner, len) = add_plan(x.shape(), y.shape())?;
            let big = if !dies(big) && x.shape() == y.shape() && dies(1 - big) {
                1 - big
            } else {
                big
            };
            Some(Fast {
                pick: dies(big).then_some(big),
                add: (big, inner, len),
            })
        }
        _ => None,
    }
}

/// Runs an elementwise step chosen by [`fast_elementwise`]; `owned` is input `fast.pick`'s
/// tensor, taken out of its slot.
fn elementwise(
    step: &Step,
    n: &Node,
    fast: Fast,
    owned: Option<Tensor>,
    ins: &[Option<&Tensor>],
    pool: &mut Pool,
) -> Result<Tensor> {
    let x = ins.first().copied().flatten();
    match (step.kernel, &step.packed) {
        (Kernel::BatchNorm, Packed::Affine { k, off }) => {
            eltwise::batch_norm(k, off, owned, x, pool)
        }
        (Kernel::View, _) => eltwise::view(n, owned, x, pool),
        (Kernel::Add, _) => {
            let (big, inner, len) = fast.add;
            let small =
                ins.get(1 - big.min(1)).copied().flatten().ok_or_else(|| {
                    Error::Graph(format!("node `{}`: Add lacks an input", n.name))
                })?;
            eltwise::add(
                owned,
                ins.get(big).copied().flatten(),
                small,
                (inner, len),
                pool,
            )
        }
        _ => {
            let act = Act::of(&n.op)
                .ok_or_else(|| Error::Graph(format!("node `{}` is not an activation", n.name)))?;
            eltwise::activation(act, owned, x, pool)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::{Arch, build};

    #[test]
    fn choice_is_a_pure_function_of_form_and_features() {
        let gemm = Op::Gemm(GemmAttrs::default());
        let wasm = Features {
            simd128: true,
            avx2_fma: false,
        };
        let dense = WeightForm::Dense2d { density: 0.9 };
        let sparse = WeightForm::Dense2d { density: 0.08 };
        assert_eq!(choose(&gemm, sparse, Features::NONE), Kernel::SparseGemm);
        assert_eq!(choose(&gemm, sparse, wasm), Kernel::SparseGemm);
        assert_eq!(
            choose(&gemm, dense, wasm),
            Kernel::DenseGemm(KernelKind::Simd128)
        );
        assert_eq!(
            choose(&gemm, dense, Features::NONE),
            Kernel::DenseGemm(KernelKind::Packed)
        );
        // Convolutions: im2col + the dense GEMM, depthwise ones direct.
        let conv = Op::Conv(crate::graph::ConvAttrs::new([3, 3]));
        let filters = WeightForm::Filters { depthwise: false };
        assert_eq!(
            choose(&conv, filters, wasm),
            Kernel::DenseConv(KernelKind::Simd128)
        );
        assert_eq!(
            choose(&conv, WeightForm::Filters { depthwise: true }, wasm),
            Kernel::Depthwise
        );
        assert_eq!(choose(&conv, WeightForm::None, wasm), Kernel::Reference);
        let pool = Op::MaxPool(crate::graph::PoolAttrs::square(2));
        assert_eq!(choose(&pool, WeightForm::None, wasm), Kernel::MaxPool);
        // Elementwise and shape-only nodes: planned, in place when their input dies.
        for op in [
            Op::Relu,
            Op::Clip { min: 0.0, max: 6.0 },
            Op::Sigmoid,
            Op::Tanh,
            Op::LeakyRelu { alpha: 0.01 },
        ] {
            assert_eq!(choose(&op, WeightForm::None, wasm), Kernel::Activation);
        }
        assert_eq!(choose(&Op::Add, WeightForm::None, wasm), Kernel::Add);
        assert_eq!(choose(&Op::Sub, WeightForm::None, wasm), Kernel::Reference);
        let bn = Op::BatchNorm {
            epsilon: 1e-5,
            momentum: 0.9,
        };
        assert_eq!(choose(&bn, WeightForm::Channels, wasm), Kernel::BatchNorm);
        assert_eq!(choose(&bn, WeightForm::None, wasm), Kernel::Reference);
        for op in [
            Op::Flatten { axis: 1 },
            Op::Reshape { shape: vec![-1] },
            Op::Squeeze { axes: vec![] },
            Op::Unsqueeze { axes: vec![0] },
            Op::Dropout { ratio: 0.5 },
        ] {
            assert_eq!(choose(&op, WeightForm::None, Features::NONE), Kernel::View);
        }
        assert_eq!(
            choose(
                &Op::Softmax {
                    axis: 1,
                    coerce_2d: false
                },
                WeightForm::None,
                wasm
            ),
            Kernel::Reference
        );
        let mmi = Op::MatMulInteger {
            a: crate::tensor::DType::U8,
            b: crate::tensor::DType::I8,
        };
        assert_eq!(
            choose(&mmi, WeightForm::Int8, Features::NONE),
            Kernel::Int8Gemm
        );
        // A weight computed at run time has nothing to pack.
        assert_eq!(choose(&mmi, WeightForm::None, wasm), Kernel::Reference);
        let convi = Op::ConvInteger {
            conv: crate::graph::ConvAttrs::new([3, 3]),
            x: crate::tensor::DType::U8,
            w: crate::tensor::DType::I8,
        };
        assert_eq!(choose(&convi, WeightForm::Int8, wasm), Kernel::Int8Conv);
        // Binarized weights: XNOR after Sign, the dense rule otherwise.
        let binary_in = WeightForm::Binary { sign_input: true };
        assert_eq!(choose(&gemm, binary_in, Features::NONE), Kernel::Xnor);
        let binary_f32 = WeightForm::Binary { sign_input: false };
        assert_eq!(
            choose(&gemm, binary_f32, Features::NONE),
            Kernel::DenseGemm(KernelKind::Packed)
        );
        assert_eq!(
            choose(&gemm, binary_f32, wasm),
            Kernel::DenseGemm(KernelKind::Simd128)
        );
        // Codebooks: small ones on the codebook kernel, pruned ones sparse, big ones dense.
        let book = |entries, density| WeightForm::Codebook { entries, density };
        assert_eq!(choose(&gemm, book(16, 0.9), wasm), Kernel::Codebook);
        assert_eq!(
            choose(&gemm, book(2, 1.0), Features::NONE),
            Kernel::Codebook
        );
        assert_eq!(
            choose(&gemm, book(17, 0.9), Features::NONE),
            Kernel::DenseGemm(KernelKind::Packed)
        );
        assert_eq!(choose(&gemm, book(16, 0.08), wasm), Kernel::SparseGemm);
        let gemm_ta = Op::Gemm(GemmAttrs {
            trans_a: true,
            ..GemmAttrs::default()
        });
        assert_eq!(choose(&gemm_ta, book(16, 0.9), wasm), Kernel::Reference);
        let ta = Op::Gemm(GemmAttrs {
            trans_a: true,
            ..GemmAttrs::default()
        });
        assert_eq!(choose(&ta, sparse, wasm), Kernel::Reference);
        // The boundary is inclusive.
        let edge = WeightForm::Dense2d {
            density: SPARSE_MAX_DENSITY,
        };
        assert_eq!(choose(&gemm, edge, Features::NONE), Kernel::SparseGemm);
    }

    fn agree(g: &Graph, features: Features) -> Vec<(String, &'static str)> {
        let plan = Plan::for_features(g, features).unwrap();
        let mut rng = crate::rng::Rng::new(3);
        let x: Vec<f32> = (0..3 * 784).map(|_| rng.uniform()).collect();
        let x = Tensor::from_shape_vec(ndarray::IxDyn(&[3, 1, 28, 28]), x).unwrap();
        let want = crate::exec::run(g, &[("input", &x)]).unwrap();
        let got = plan.run(&[("input", &x)]).unwrap();
        for (a, b) in want.iter().zip(&got) {
            assert_eq!(a.shape(), b.shape());
            for (x, y) in a.iter().zip(b.iter()) {
                assert!((x - y).abs() <= 1e-4 * (1.0 + x.abs()), "{x} vs {y}");
            }
        }
        plan.kernels()
    }

    #[test]
    fn plans_agree_with_the_reference_dense_and_pruned() {
        for arch in [
            Arch::Lenet300100,
            Arch::Lenet5,
            Arch::Mobilenet,
            Arch::TinyMlp,
        ] {
            let mut g = build(arch, 1).unwrap();
            for f in [
                Features::NONE,
                Features {
                    simd128: false,
                    avx2_fma: true,
                },
            ] {
                agree(&g, f);
            }
            // Prune every Gemm to ~10 %: those nodes must take the CSR kernel.
            let names: Vec<String> = g
                .nodes
                .iter()
                .filter(|n| matches!(n.op, Op::Gemm(_)))
                .map(|n| n.inputs[1].clone())
                .collect();
            for w in &names {
                let t = g.weights.get_mut(w).unwrap();
                t.iter_mut().enumerate().for_each(|(i, v)| {
                    if i % 10 != 0 {
                        *v = 0.0
                    }
                });
            }
            let ks = agree(&g, Features::NONE);
            let gemms: Vec<_> = ks.iter().filter(|(_, k)| *k == "csr").collect();
            assert_eq!(gemms.len(), names.len(), "{arch:?}: {ks:?}");
        }
    }

    #[test]
    fn packed_dense_gemm_agrees_with_the_reference_for_every_available_kernel() {
        for arch in [Arch::Lenet300100, Arch::TinyMlp, Arch::Mobilenet] {
            let g = build(arch, 2).unwrap();
            let mut rng = crate::rng::Rng::new(4);
            let x: Vec<f32> = (0..5 * 784).map(|_| rng.normal()).collect();
            let x = Tensor::from_shape_vec(ndarray::IxDyn(&[5, 1, 28, 28]), x).unwrap();
            let want = crate::exec::run(&g, &[("input", &x)]).unwrap();
            for kind in kernels::available() {
                let mut plan = Plan::for_features(&g, Features::NONE).unwrap();
                force(&mut plan, kind);
                let got = plan.run(&[("input", &x)]).unwrap();
                for (x, y) in want[0].iter().zip(got[0].iter()) {
                    assert!(
                        (x - y).abs() <= 1e-4 * (1.0 + x.abs()),
                        "{kind:?} {x} vs {y}"
                    );
                }
            }
        }
    }

    /// Every Gemm and non-depthwise Conv of `plan` on the dense kernels of `kind`.
    fn force(plan: &mut Plan, kind: KernelKind) {
        for s in &mut plan.steps {
            let n = &plan.graph.nodes[s.node];
            match &n.op {
                Op::Gemm(a) => {
                    let (k, nn, b) = op_b(a, &plan.graph.weights[&n.inputs[1]]);
                    s.kernel = Kernel::DenseGemm(kind);
                    s.packed = Packed::Dense(PackedB::new(kind, k, nn, &b).unwrap());
                }
                Op::Conv(a) if s.kernel != Kernel::Depthwise => {
                    let w = &plan.graph.weights[&n.inputs[1]];
                    s.kernel = Kernel::DenseConv(kind);
                    s.packed = Packed::Conv(conv::PackedConv::new(kind, a.groups, w).unwrap());
                }
                _ => {}
            }
        }
    }

    #[test]
    fn conv_kernels_agree_with_the_reference_on_odd_geometries() {
        use crate::graph::ConvAttrs;
        let mut rng = crate::rng::Rng::new(9);
        // (channels, filters, groups, kernel, stride, pads, dilation, h, w)
        type ConvCase = (
            usize,
            usize,
            usize,
            [usize; 2],
            [usize; 2],
            [usize; 4],
            [usize; 2],
            usize,
            usize,
        );
        let cases: &[ConvCase] = &[
            (1, 6, 1, [5, 5], [1, 1], [2, 2, 2, 2], [1, 1], 28, 28),
            (3, 5, 1, [3, 2], [2, 1], [1, 0, 0, 1], [1, 2], 9, 7),
            (4, 4, 4, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 8, 8),
            (4, 8, 4, [3, 3], [2, 2], [1, 1, 1, 1], [1, 1], 7, 9),
            (6, 4, 2, [1, 1], [1, 1], [0, 0, 0, 0], [1, 1], 5, 3),
            (2, 3, 1, [1, 1], [1, 1], [0, 0, 0, 0], [1, 1], 1, 1),
            (3, 3, 3, [2, 3], [3, 2], [0, 2, 1, 0], [2, 1], 6, 11),
            (2, 7, 1, [4, 4], [1, 1], [3, 3, 3, 3], [1, 1], 2, 2),
            // Depthwise with column strides 3 (split into phases) and 5 (gathered), dilated.
            (2, 2, 2, [3, 3], [1, 3], [1, 1, 1, 1], [1, 2], 7, 13),
            (2, 4, 2, [2, 2], [2, 5], [0, 1, 0, 1], [1, 1], 5, 12),
        ];
        for &(c, m, groups, kernel, strides, pads, dilations, h, w) in cases {
            let mut attrs = ConvAttrs::new(kernel);
            attrs.groups = groups;
            attrs.strides = strides;
            attrs.pads = pads;
            attrs.dilations = dilations;
            let wshape = [m, c / groups, kernel[0], kernel[1]];
            let weight: Vec<f32> = (0..wshape.iter().product::<usize>())
                .map(|_| rng.normal())
                .collect();
            let bias: Vec<f32> = (0..m).map(|_| rng.normal()).collect();
            let mut g = graph_on(c, h, w);
            g.weights.insert(
                "w".into(),
                crate::tensor::from_vec(&wshape, weight).unwrap(),
            );
            g.weights
                .insert("b".into(), crate::tensor::from_vec(&[m], bias).unwrap());
            g.nodes
                .push(Node::new("y", Op::Conv(attrs), &["x", "w", "b"]));
            g.outputs.push("y".into());
            for batch in [1, 3] {
                let x: Vec<f32> = (0..batch * c * h * w).map(|_| rng.normal()).collect();
                let x = crate::tensor::from_vec(&[batch, c, h, w], x).unwrap();
                let want = crate::exec::run(&g, &[("x", &x)]).unwrap();
                let mut kinds = kernels::available();
                kinds.push(KernelKind::Scalar);
                for kind in kinds {
                    let mut plan = Plan::for_features(&g, Features::NONE).unwrap();
                    let depthwise = c / groups == 1 && groups > 1;
                    assert_eq!(plan.steps[0].kernel == Kernel::Depthwise, depthwise);
                    force(&mut plan, kind);
                    let got = plan.run(&[("x", &x)]).unwrap();
                    assert_eq!(want[0].shape(), got[0].shape());
                    for (a, b) in want[0].iter().zip(got[0].iter()) {
                        assert!(
                            (a - b).abs() <= 1e-4 * (1.0 + a.abs()),
                            "{kind:?} {c}→{m}/{groups}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn planned_max_pooling_agrees_with_the_reference() {
        use crate::graph::{Dim, PoolAttrs, ValueInfo};
        let mut rng = crate::rng::Rng::new(5);
        // (kernel, strides, pads, dilations, ceil_mode, h, w)
        type PoolCase = (
            [usize; 2],
            [usize; 2],
            [usize; 4],
            [usize; 2],
            bool,
            usize,
            usize,
        );
        let cases: &[PoolCase] = &[
            ([2, 2], [2, 2], [0, 0, 0, 0], [1, 1], false, 28, 28),
            ([3, 3], [2, 2], [1, 1, 1, 1], [1, 1], false, 7, 9),
            ([3, 2], [1, 3], [2, 0, 1, 1], [2, 1], false, 6, 11),
            ([2, 2], [2, 2], [0, 0, 0, 0], [1, 1], true, 5, 5),
            ([1, 1], [1, 1], [0, 0, 0, 0], [1, 1], false, 1, 1),
            ([4, 4], [1, 1], [3, 3, 3, 3], [1, 1], false, 2, 3),
        ];
        for &(kernel, strides, pads, dilations, ceil_mode, h, w) in cases {
            let attrs = PoolAttrs {
                kernel,
                strides,
                pads,
                dilations,
                ceil_mode,
                ..PoolAttrs::square(1)
            };
            let mut g = Graph::default();
            g.inputs.push(ValueInfo {
                name: "x".into(),
                shape: vec![
                    Dim::Sym("n".into()),
                    Dim::Fixed(2),
                    Dim::Fixed(h),
                    Dim::Fixed(w),
                ],
            });
            g.nodes.push(Node::new("y", Op::MaxPool(attrs), &["x"]));
            g.outputs.push("y".into());
            let plan = Plan::new(&g).unwrap();
            assert_eq!(plan.kernels()[0].1, "maxpool");
            let mut x: Vec<f32> = (0..3 * 2 * h * w).map(|_| rng.normal()).collect();
            // Ties and a NaN: the reference keeps the first largest value of each window.
            x[0] = f32::NAN;
            if x.len() > 3 {
                x[2] = x[3];
            }
            let x = crate::tensor::from_vec(&[3, 2, h, w], x).unwrap();
            let want = crate::exec::run(&g, &[("x", &x)]).unwrap();
            let got = plan.run(&[("x", &x)]).unwrap();
            assert_eq!(want[0].shape(), got[0].shape());
            for (a, b) in want[0].iter().zip(got[0].iter()) {
                assert!(
                    a.to_bits() == b.to_bits(),
                    "{kernel:?} {strides:?}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn values_read_again_or_returned_are_not_overwritten() {
        use crate::graph::{Dim, ValueInfo};
        let mut g = Graph::default();
        g.inputs.push(ValueInfo {
            name: "x".into(),
            shape: vec![Dim::Sym("n".into()), Dim::Fixed(3)],
        });
        let w =
            crate::tensor::from_vec(&[3, 4], (0..12).map(|i| i as f32 - 5.5).collect()).unwrap();
        g.weights.insert("w".into(), w);
        g.nodes
            .push(Node::new("h", Op::Gemm(GemmAttrs::default()), &["x", "w"]));
        // `h` is returned and read twice more: neither Relu may work in its buffer.
        g.nodes.push(Node::new("r", Op::Relu, &["h"]));
        g.nodes.push(Node::new("s", Op::Add, &["h", "r"]));
        // `s` dies at `t`: this Relu works in place.
        g.nodes.push(Node::new("t", Op::Relu, &["s"]));
        // `t` is returned: this Relu may not work in its buffer; its own result is never read.
        g.nodes.push(Node::new("unused", Op::Relu, &["t"]));
        g.outputs = vec!["h".into(), "t".into(), "x".into(), "w".into()];
        let plan = Plan::new(&g).unwrap();
        let dies: Vec<Vec<bool>> = plan.steps.iter().map(|s| s.dies.clone()).collect();
        assert_eq!(
            dies,
            [
                vec![false, false],
                vec![false],
                vec![false, true],
                vec![true],
                vec![false]
            ]
        );
        // `h` has three readers: no Relu is fused into its Gemm.
        assert!(plan.steps.iter().all(|s| s.act.is_none()));
        let x = crate::tensor::from_vec(&[2, 3], vec![1.0, -2.0, 0.5, 3.0, 0.0, -1.0]).unwrap();
        let want = crate::exec::run(&g, &[("x", &x)]).unwrap();
        for _ in 0..2 {
            let got = plan.run(&[("x", &x)]).unwrap();
            assert_eq!(want, got);
        }
    }

    #[test]
    fn large_batches_fall_back_to_the_reference_natively() {
        assert_eq!(sparse_max_batch(Features::NONE), 8);
        let wasm = Features {
            simd128: true,
            avx2_fma: false,
        };
        assert_eq!(sparse_max_batch(wasm), usize::MAX);
        let mut g = build(Arch::TinyMlp, 1).unwrap();
        let w = g.weights.get_mut("fc1.weight").unwrap();
        w.iter_mut().enumerate().for_each(|(i, v)| {
            if i % 10 != 0 {
                *v = 0.0
            }
        });
        let plan = Plan::for_features(&g, Features::NONE).unwrap();
        for batch in [1, 8, 9, 20] {
            let x = Tensor::from_elem(ndarray::IxDyn(&[batch, 1, 28, 28]), 0.3f32);
            let want = crate::exec::run(&g, &[("input", &x)]).unwrap();
            let got = plan.run(&[("input", &x)]).unwrap();
            for (a, b) in want[0].iter().zip(got[0].iter()) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()));
            }
        }
    }

    #[test]
    fn wrong_inputs_are_errors() {
        let g = build(Arch::TinyMlp, 1).unwrap();
        let plan = Plan::new(&g).unwrap();
        let x = crate::tensor::zeros(&[2, 1, 27, 28]);
        assert!(plan.run(&[("input", &x)]).is_err());
        assert!(plan.run(&[]).is_err());
    }

    /// A graph on input `x` of shape `[n, c, h, w]` (batch symbolic).
    fn graph_on(c: usize, h: usize, w: usize) -> Graph {
        use crate::graph::{Dim, ValueInfo};
        let mut g = Graph::default();
        g.inputs.push(ValueInfo {
            name: "x".into(),
            shape: vec![
                Dim::Sym("n".into()),
                Dim::Fixed(c),
                Dim::Fixed(h),
                Dim::Fixed(w),
            ],
        });
        g
    }

    fn randn(rng: &mut crate::rng::Rng, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        crate::tensor::from_vec(shape, (0..n).map(|_| rng.normal()).collect()).unwrap()
    }

    fn bn_node(name: &str, x: &str, g: &mut Graph, rng: &mut crate::rng::Rng, c: usize) -> Node {
        for (s, lo) in [("scale", 0.5), ("bias", -1.0), ("mean", -1.0), ("var", 0.2)] {
            let v: Vec<f32> = (0..c).map(|_| lo + rng.uniform()).collect();
            g.weights.insert(
                format!("{name}.{s}"),
                crate::tensor::from_vec(&[c], v).unwrap(),
            );
        }
        let ins = ["scale", "bias", "mean", "var"].map(|s| format!("{name}.{s}"));
        Node::new(
            name,
            Op::BatchNorm {
                epsilon: 1e-5,
                momentum: 0.9,
            },
            &[x, &ins[0], &ins[1], &ins[2], &ins[3]],
        )
    }

    /// `plan` against the reference on `x`: within `tol` relative (0: bit for bit).
    fn agree_on(g: &Graph, x: &Tensor, tol: f32) -> Plan {
        let plan = Plan::new(g).unwrap();
        let want = crate::exec::run(g, &[("x", x)]).unwrap();
        for _ in 0..2 {
            let got = plan.run(&[("x", x)]).unwrap();
            assert_eq!(want.len(), got.len());
            for (a, b) in want.iter().zip(&got) {
                assert_eq!(a.shape(), b.shape());
                for (u, v) in a.iter().zip(b.iter()) {
                    if tol == 0.0 {
                        assert_eq!(u.to_bits(), v.to_bits(), "{u} vs {v}");
                    } else {
                        assert!((u - v).abs() <= tol * (1.0 + u.abs()), "{u} vs {v}");
                    }
                }
            }
        }
        plan
    }

    #[test]
    fn batchnorm_folds_into_its_conv_unless_the_conv_output_is_read_again() {
        use crate::graph::ConvAttrs;
        let mut rng = crate::rng::Rng::new(21);
        for (c, m, h, w, depthwise) in [(3, 5, 7, 9, false), (4, 4, 5, 3, true)] {
            let mut g = graph_on(c, h, w);
            let mut a = ConvAttrs::new([3, 3]);
            a.pads = [1, 0, 1, 2];
            a.groups = if depthwise { c } else { 1 };
            let cg = c / a.groups;
            g.weights
                .insert("w".into(), randn(&mut rng, &[m, cg, 3, 3]));
            // No bias: the fold creates one.
            g.nodes.push(Node::new("conv", Op::Conv(a), &["x", "w"]));
            let bn = bn_node("bn", "conv", &mut g, &mut rng, m);
            g.nodes.push(bn);
            g.nodes.push(Node::new(
                "clip",
                Op::Clip {
                    min: -0.5,
                    max: 1.5,
                },
                &["bn"],
            ));
            g.outputs.push("clip".into());
            for batch in [1, 3] {
                let x = randn(&mut rng, &[batch, c, h, w]);
                let plan = agree_on(&g, &x, 1e-4);
                // One step: the conv, with the batch norm folded in and the Clip fused.
                assert_eq!(plan.steps.len(), 1, "{:?}", plan.kernels());
                assert_eq!(plan.steps[0].act, Some(Act::Clip(-0.5, 1.5)));
                assert_eq!(plan.graph().outputs, ["clip"]);
            }
            // The conv's output read again: nothing folds, the BatchNorm runs on its kernel,
            // the Clip (reading the BatchNorm) is fused nowhere.
            g.nodes.push(Node::new("sum", Op::Add, &["conv", "clip"]));
            g.outputs = vec!["sum".into()];
            let x = randn(&mut rng, &[2, c, h, w]);
            let plan = agree_on(&g, &x, 1e-4);
            let names: Vec<&str> = plan.kernels().iter().map(|(_, k)| *k).collect();
            assert_eq!(names[1..], ["batchnorm", "activation", "add"]);
            assert!(plan.steps.iter().all(|s| s.act.is_none()));
            // Returned as well: no fold either.
            g.nodes.pop();
            g.outputs = vec!["clip".into(), "conv".into()];
            let plan = agree_on(&g, &x, 1e-4);
            assert_eq!(plan.steps.len(), 3, "{:?}", plan.kernels());
        }
    }

    #[test]
    fn batchnorm_with_bad_statistics_errors_without_panicking() {
        use crate::graph::ConvAttrs;
        let mut rng = crate::rng::Rng::new(22);
        let mut g = graph_on(2, 4, 4);
        g.weights.insert("w".into(), randn(&mut rng, &[3, 2, 1, 1]));
        g.nodes.push(Node::new(
            "conv",
            Op::Conv(ConvAttrs::new([1, 1])),
            &["x", "w"],
        ));
        let bn = bn_node("bn", "conv", &mut g, &mut rng, 3);
        g.nodes.push(bn);
        g.outputs.push("bn".into());
        let x = randn(&mut rng, &[1, 2, 4, 4]);
        // A mean or a variance of the wrong length, then channels that differ from the conv's.
        for (stat, shape) in [("bn.mean", vec![2]), ("bn.var", vec![5]), ("all", vec![4])] {
            let mut h = g.clone();
            for s in ["bn.scale", "bn.bias", "bn.mean", "bn.var"] {
                if stat == "all" || s == stat {
                    h.weights.insert(s.into(), randn(&mut rng, &shape));
                }
            }
            let plan = Plan::new(&h).unwrap();
            assert_eq!(plan.steps.len(), 2, "{stat}: nothing folds");
            assert!(plan.run(&[("x", &x)]).is_err(), "{stat}");
            assert!(crate::exec::run(&h, &[("x", &x)]).is_err(), "{stat}");
        }
    }

    #[test]
    fn elementwise_and_shape_kernels_match_the_reference_bit_for_bit() {
        let mut rng = crate::rng::Rng::new(23);
        let (c, h, w) = (3, 5, 7);
        let mut g = graph_on(c, h, w);
        g.weights.insert("chan".into(), randn(&mut rng, &[c, 1, 1]));
        g.weights
            .insert("row".into(), randn(&mut rng, &[c * h * w]));
        g.weights.insert("odd".into(), randn(&mut rng, &[1, h, 1]));
        let n = |name: &str, op: Op, ins: &[&str]| Node::new(name, op, ins);
        let mut nodes = vec![
            n("a", Op::Sigmoid, &["x"]),
            n("b", Op::Tanh, &["a"]),
            n("c", Op::Add, &["b", "x"]),
            n("d", Op::Add, &["c", "chan"]),
            n("e", Op::LeakyRelu { alpha: 0.2 }, &["d"]),
        ];
        nodes.push(bn_node("f", "e", &mut g, &mut rng, c));
        nodes.extend([
            n(
                "g",
                Op::Clip {
                    min: -0.25,
                    max: 0.75,
                },
                &["f"],
            ),
            n("h", Op::Add, &["g", "f"]),
            // A broadcast this kernel does not take: the reference runs.
            n("h2", Op::Add, &["odd", "h"]),
            n("i", Op::Flatten { axis: 1 }, &["h2"]),
            n("j", Op::Add, &["row", "i"]),
            n(
                "k",
                Op::Reshape {
                    shape: vec![0, 3, -1],
                },
                &["j"],
            ),
            n("l", Op::Unsqueeze { axes: vec![1] }, &["k"]),
            n("m", Op::Squeeze { axes: vec![1] }, &["l"]),
            n("o", Op::Relu, &["m"]),
            n("p", Op::Add, &["o", "o"]),
            n("q", Op::Dropout { ratio: 0.5 }, &["p"]),
        ]);
        g.nodes = nodes;
        g.outputs = vec!["q".into(), "d".into(), "k".into()];
        for batch in [1, 4] {
            let x = randn(&mut rng, &[batch, c, h, w]);
            let plan = agree_on(&g, &x, 0.0);
            let names: Vec<&str> = plan.kernels().iter().map(|(_, k)| *k).collect();
            assert_eq!(
                names,
                [
                    "activation",
                    "activation",
                    "add",
                    "add",
                    "activation",
                    "batchnorm",
                    "activation",
                    "add",
                    "add",
                    "view",
                    "add",
                    "view",
                    "view",
                    "view",
                    "activation",
                    "add",
                    "view"
                ]
            );
            // `x` is an input, `d` and `k` are returned, `f` and `o` are read twice.
            let dies: Vec<Vec<bool>> = plan.steps.iter().map(|s| s.dies.clone()).collect();
            assert_eq!(dies[0], [false]);
            assert_eq!(dies[2], [true, false]);
            assert_eq!(dies[4], [false]);
            assert_eq!(dies[6], [false]);
            assert_eq!(dies[7], [true, true]);
            assert_eq!(dies[12], [false]);
            assert_eq!(dies[15], [false, false]);
        }
        // Wrong input shapes are errors, not panics.
        let x = randn(&mut rng, &[2, c + 1, h, w]);
        assert!(Plan::new(&g).unwrap().run(&[("x", &x)]).is_err());
    }
}

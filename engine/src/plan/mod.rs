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

pub mod fuse;

use crate::graph::{GemmAttrs, Graph, Node, Op};
use crate::kernels::binary::{BinaryMatrix, pack_signs};
use crate::kernels::codebook::CodebookMatrix;
use crate::kernels::sparse::Csr;
use crate::kernels::{self, Features, KernelKind};
use crate::ops::{self, Mode};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// Above this fraction of non-zero weights a Gemm stays dense: at 30 % density the CSR kernel
/// does 30 % of the multiply-adds but with gathered loads.
pub const SPARSE_MAX_DENSITY: f32 = 0.3;

/// The largest batch for which a planned sparse (or codebook) Gemm uses its kernel; larger batches run the
/// reference product on the (zero-filled) dense weight. Natively the reference product is
/// `matrixmultiply` at near-peak speed, and measured break-even against the CSR kernel on
/// LeNet-300-100 pruned to 8 % is about 16 images (docs/KERNELS.md), so the limit is 8; in a
/// wasm `simd128` build the reference product has no SIMD and the CSR kernel is used at every
/// batch. Pure.
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
    /// Packed dense GEMM of this kind, weights pre-transposed.
    DenseGemm(KernelKind),
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
            Kernel::SparseGemm => "csr",
            Kernel::Int8Gemm => "int8-gemm",
            Kernel::Int8Conv => "int8-conv",
            Kernel::Xnor => "xnor",
            Kernel::Codebook => "codebook",
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
            } else if features.simd128 {
                Kernel::DenseGemm(kernels::select(features))
            } else {
                Kernel::Reference
            }
        }
        (Op::MatMulInteger { .. } | Op::QLinearMatMul { .. }, WeightForm::Int8) => Kernel::Int8Gemm,
        (Op::ConvInteger { .. } | Op::QLinearConv { .. }, WeightForm::Int8) => Kernel::Int8Conv,
        _ => Kernel::Reference,
    }
}

/// Weights packed for a kernel.
#[derive(Clone, Debug)]
enum Packed {
    None,
    /// `op(B)` as a row-major `k × n` matrix.
    Dense {
        k: usize,
        n: usize,
        b: Vec<f32>,
    },
    /// `op(B)ᵀ` (`n × k`, one row per output) in CSR.
    Sparse(Csr),
    /// An integer op's int8 weight, packed.
    Int8(Box<ops::PreparedInt8>),
    /// `op(B)ᵀ`'s signs and per-row `α`.
    Xnor(BinaryMatrix),
    /// `op(B)ᵀ` as codes into its distinct values.
    Codebook(CodebookMatrix),
}

#[derive(Clone, Debug)]
struct Step {
    node: usize,
    kernel: Kernel,
    packed: Packed,
}

/// A graph ready to run: one kernel per node, weights packed.
#[derive(Clone, Debug)]
pub struct Plan {
    graph: Graph,
    steps: Vec<Step>,
    sparse_max_batch: usize,
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
    match (&n.op, n.inputs.get(1).and_then(|w| g.weights.get(w))) {
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
        let mut steps = Vec::with_capacity(graph.nodes.len());
        let signs = sign_values(&graph);
        for (i, n) in graph.nodes.iter().enumerate() {
            let mut kernel = choose(&n.op, form(&graph, n, &signs), features);
            if let Kernel::DenseGemm(k) = kernel
                && kernels::Kernels::for_kind(k).is_none()
            {
                kernel = Kernel::Reference;
            }
            let packed = match (kernel, &n.op) {
                (Kernel::DenseGemm(_), Op::Gemm(a)) => {
                    let (k, nn, b) = op_b(a, &graph.weights[&n.inputs[1]]);
                    Packed::Dense { k, n: nn, b }
                }
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
                _ => Packed::None,
            };
            steps.push(Step {
                node: i,
                kernel,
                packed,
            });
        }
        Ok(Plan {
            graph,
            steps,
            sparse_max_batch: sparse_max_batch(features),
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
    pub fn run(&self, inputs: &[(&str, &Tensor)]) -> Result<Vec<Tensor>> {
        crate::exec::run_nodes(&self.graph, inputs, |idx, n, ins| {
            let packed = self.steps.get(idx).map_or(&Packed::None, |s| &s.packed);
            let batch = ins
                .first()
                .copied()
                .flatten()
                .map_or(0, |t| t.shape().first().copied().unwrap_or(0));
            match (packed, &n.op) {
                (Packed::None, _) => Ok(ops::forward(n, ins, Mode::Eval)?.0),
                (Packed::Int8(p), _) if ops::packed_matmul_applies(n, ins) => p.run(n, ins),
                (Packed::Int8(_), _) => Ok(ops::forward(n, ins, Mode::Eval)?.0),
                // XNOR needs every activation at ±1; a Sign of an exact 0 gives 0.
                (Packed::Xnor(_), _)
                    if ins
                        .first()
                        .copied()
                        .flatten()
                        .is_none_or(|x| x.iter().any(|v| *v == 0.0)) =>
                {
                    Ok(ops::forward(n, ins, Mode::Eval)?.0)
                }
                // The codebook kernel has the same profile: natively it wins at small batches
                // (7–11× at batch 1 on LeNet-300-100) and loses to `matrixmultiply` at 64.
                (Packed::Sparse(_) | Packed::Codebook(_), _) if batch > self.sparse_max_batch => {
                    Ok(ops::forward(n, ins, Mode::Eval)?.0)
                }
                (p, Op::Gemm(a)) => Ok(vec![gemm(n, a, p, ins)?]),
                _ => Ok(ops::forward(n, ins, Mode::Eval)?.0),
            }
        })
    }
}

/// A planned Gemm: `alpha · A · op(B) + beta · C` with `op(B)` packed.
fn gemm(node: &Node, at: &GemmAttrs, p: &Packed, ins: &[Option<&Tensor>]) -> Result<Tensor> {
    let a = ops::get(node, ins, 0)?;
    let (k, n) = match p {
        Packed::Dense { k, n, .. } => (*k, *n),
        Packed::Sparse(c) => (c.cols(), c.rows()),
        Packed::Xnor(b) => (b.k(), b.rows()),
        Packed::Codebook(c) => (c.cols(), c.rows()),
        Packed::None | Packed::Int8(_) => {
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
    let mut y = vec![0.0f32; m * n];
    match p {
        Packed::Dense { b, .. } => kernels::gemm(m, k, n, &x, b, &mut y)?,
        Packed::Sparse(c) => c.matmul_t(m, &x, &mut y)?,
        Packed::Xnor(b) => b.matmul_t(m, &pack_signs(m, k, &x)?, &[], &mut y)?,
        Packed::Codebook(c) => c.matmul_t(m, &x, &mut y)?,
        Packed::None | Packed::Int8(_) => {}
    }
    if at.alpha != 1.0 {
        y.iter_mut().for_each(|v| *v *= at.alpha);
    }
    if let Some(c) = ops::opt(ins, 2).filter(|_| at.beta != 0.0) {
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
    Tensor::from_shape_vec(ndarray::IxDyn(&[m, n]), y).map_err(|e| Error::Invalid(e.to_string()))
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
        assert_eq!(choose(&gemm, dense, Features::NONE), Kernel::Reference);
        assert_eq!(choose(&Op::Relu, WeightForm::None, wasm), Kernel::Reference);
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
        assert_eq!(choose(&gemm, binary_f32, Features::NONE), Kernel::Reference);
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
            Kernel::Reference
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
                for s in &mut plan.steps {
                    let n = &plan.graph.nodes[s.node];
                    if let Op::Gemm(a) = &n.op {
                        let (k, nn, b) = op_b(a, &plan.graph.weights[&n.inputs[1]]);
                        s.kernel = Kernel::DenseGemm(kind);
                        s.packed = Packed::Dense { k, n: nn, b };
                    }
                }
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
}

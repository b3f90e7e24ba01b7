//! Whole-graph execution on the GPU: every node with a GPU kernel runs there, its result staying
//! on the device for the next node; any other node runs on the CPU reference
//! ([`crate::ops::forward`]), its inputs read back first. Each run reports where every node ran.

use super::context::{GpuContext, GpuTensor};
use super::conv2d::{ConvSpec, conv2d};
use super::elementwise::{Binary, MAX_RANK, Unary, binary, unary};
use super::int8_matmul::{MAX_K, PackedInt8B};
use super::matmul::{MatmulSpec, bias_strides, matmul};
use super::pool::{PoolKind, PoolSpec, pool};
use crate::graph::{Graph, Node, Op};
use crate::ops::{self, Mode};
use crate::tensor::{DType, Tensor};
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::Arc;

/// Where a node ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// On the GPU, through a WGSL kernel (or as a view of a GPU buffer: Reshape, Flatten).
    Gpu,
    /// On the CPU reference.
    Cpu,
}

/// One node and the device that ran it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NodeDevice {
    /// Node name.
    pub node: String,
    /// Op name.
    pub op: &'static str,
    /// Where it ran.
    pub device: Device,
}

/// The outputs of one run and where each node ran.
#[derive(Clone, Debug)]
pub struct GpuRun {
    /// The graph outputs in order.
    pub outputs: Vec<Tensor>,
    /// Every node in order with its device.
    pub devices: Vec<NodeDevice>,
}

/// Whether the GPU has a kernel for `op` (the inputs' shapes may still send a node to the CPU:
/// a MatMul of vectors, a broadcast above rank 6, a MaxPool asked for its indices).
pub fn has_gpu_kernel(n: &Node) -> bool {
    match &n.op {
        Op::Gemm(_)
        | Op::MatMul
        | Op::Conv(_)
        | Op::AvgPool(_)
        | Op::GlobalAvgPool
        | Op::Relu
        | Op::Clip { .. }
        | Op::Sigmoid
        | Op::Tanh
        | Op::LeakyRelu { .. }
        | Op::Add
        | Op::Sub
        | Op::Mul
        | Op::Div
        | Op::Flatten { .. }
        | Op::Reshape { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Dropout { .. } => n.outputs.len() == 1,
        Op::MaxPool(_) => n.outputs.len() == 1,
        _ => false,
    }
}

/// A value between nodes: on the host, on the device, or both.
#[derive(Default)]
struct Val {
    host: Option<Tensor>,
    dev: Option<GpuTensor>,
}

/// A graph prepared for the GPU: weights of GPU nodes uploaded once.
pub struct GpuSession {
    ctx: Arc<GpuContext>,
    graph: Graph,
    weights: HashMap<String, GpuTensor>,
    /// Inference BatchNorm as a per-channel `x · k + off` (as the reference computes it), by
    /// node name: `(k, off)`, each `[C]`.
    affine: HashMap<String, (GpuTensor, GpuTensor)>,
    /// `MatMulInteger` / `QLinearMatMul` nodes with a constant 2-D `B` and one zero point for
    /// it, by node name: `B` packed for the int8 kernel.
    int8: HashMap<String, PackedInt8B>,
}

/// Positions of `B` and its zero point among an integer matmul's inputs, and their type.
fn int_matmul_b(op: &Op) -> Option<(usize, usize, DType)> {
    match *op {
        Op::MatMulInteger { b, .. } => Some((1, 3, b)),
        Op::QLinearMatMul { b, .. } => Some((3, 5, b)),
        _ => None,
    }
}

/// Position of `A`'s zero point and `A`'s type.
fn int_matmul_a(op: &Op) -> Option<(usize, DType)> {
    match *op {
        Op::MatMulInteger { a, .. } | Op::QLinearMatMul { a, .. } => Some((2, a)),
        _ => None,
    }
}

/// The values of an 8-bit integer tensor as `i8` (`uint8` shifted down by 128, which leaves
/// every difference `x − zero_point` unchanged), or `None` if a value is not an integer of
/// that type (the CPU reference then reports it).
fn as_i8(t: &Tensor, dt: DType) -> Option<Vec<i8>> {
    let shift = match dt {
        DType::I8 => 0.0,
        DType::U8 => 128.0,
        _ => return None,
    };
    t.iter()
        .map(|&v| {
            let s = v - shift;
            (v.fract() == 0.0 && (-128.0..=127.0).contains(&s)).then_some(s as i8)
        })
        .collect()
}

/// One zero point for the whole tensor (absent = 0; a vector of equal values counts), as `i8`.
fn one_zero(t: Option<&Tensor>, dt: DType) -> Option<i8> {
    let Some(t) = t else {
        // A missing zero point is 0 of the type: −128 after the uint8 shift.
        return match dt {
            DType::I8 => Some(0),
            DType::U8 => Some(-128),
            _ => None,
        };
    };
    let v = as_i8(t, dt)?;
    let first = *v.first()?;
    v.iter().all(|&z| z == first).then_some(first)
}

/// `(k, off)` of an inference BatchNorm whose statistics are weights: `k = s / √(v + ε)`,
/// `off = b − m·k`, exactly as [`crate::ops`] computes them.
fn batchnorm_affine(g: &Graph, n: &Node) -> Option<(Vec<f32>, Vec<f32>)> {
    let Op::BatchNorm { epsilon, .. } = n.op else {
        return None;
    };
    let w = |i: usize| -> Option<Vec<f32>> {
        let t = g.weights.get(n.inputs.get(i)?)?;
        (t.ndim() == 1).then(|| t.iter().copied().collect())
    };
    let (s, b, m, v) = (w(1)?, w(2)?, w(3)?, w(4)?);
    let c = s.len();
    if b.len() != c || m.len() != c || v.len() != c {
        return None;
    }
    let k: Vec<f32> = (0..c).map(|i| s[i] / (v[i] + epsilon).sqrt()).collect();
    let off = (0..c).map(|i| b[i] - m[i] * k[i]).collect();
    Some((k, off))
}

impl std::fmt::Debug for GpuSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuSession")
            .field("adapter", self.ctx.adapter())
            .field("nodes", &self.graph.nodes.len())
            .finish_non_exhaustive()
    }
}

impl GpuSession {
    /// Validates `graph` and uploads the weights its GPU nodes read.
    pub fn new(ctx: Arc<GpuContext>, graph: &Graph) -> Result<GpuSession> {
        let mut graph = graph.clone();
        graph.validate()?;
        let mut affine = HashMap::new();
        for n in &graph.nodes {
            if let Some((k, off)) = batchnorm_affine(&graph, n) {
                let c = [k.len()];
                affine.insert(n.name.clone(), (ctx.upload(&c, &k)?, ctx.upload(&c, &off)?));
            }
        }
        let mut int8 = HashMap::new();
        for n in &graph.nodes {
            let Some((bi, zi, dt)) = int_matmul_b(&n.op) else {
                continue;
            };
            let w = |i: usize| n.inputs.get(i).and_then(|s| graph.weights.get(s));
            let Some(b) = w(bi).filter(|b| b.ndim() == 2 && b.shape()[0] <= MAX_K) else {
                continue;
            };
            let zero = match n.inputs.get(zi).filter(|s| !s.is_empty()) {
                None => one_zero(None, dt),
                Some(_) => w(zi).and_then(|z| one_zero(Some(z), dt)),
            };
            if let (Some(vals), Some(zero)) = (as_i8(b, dt), zero) {
                let (k, cols) = (b.shape()[0], b.shape()[1]);
                int8.insert(
                    n.name.clone(),
                    PackedInt8B::new(&ctx, &vals, zero, k, cols)?,
                );
            }
        }
        let mut weights = HashMap::new();
        for n in graph.nodes.iter().filter(|n| has_gpu_kernel(n)) {
            for i in &n.inputs {
                if let Some(w) = graph.weights.get(i)
                    && !weights.contains_key(i)
                {
                    weights.insert(i.clone(), ctx.upload_tensor(w)?);
                }
            }
        }
        Ok(GpuSession {
            ctx,
            graph,
            weights,
            affine,
            int8,
        })
    }

    /// The context the session runs on.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// The graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Where each node is meant to run (before seeing the inputs' shapes).
    pub fn planned(&self) -> Vec<NodeDevice> {
        self.graph
            .nodes
            .iter()
            .map(|n| NodeDevice {
                node: n.name.clone(),
                op: n.op.name(),
                device: if self.on_gpu(n) {
                    Device::Gpu
                } else {
                    Device::Cpu
                },
            })
            .collect()
    }

    /// Runs the graph (inference) and returns its outputs and where every node ran. The
    /// results match [`crate::exec::run`] up to float rounding.
    pub async fn run(&self, inputs: &[(&str, &Tensor)]) -> Result<GpuRun> {
        let g = &self.graph;
        crate::exec::check_inputs(g, inputs)?;
        let mut uses: HashMap<String, usize> = crate::exec::use_counts(g)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let mut vals: HashMap<String, Val> = inputs
            .iter()
            .map(|(k, t)| {
                (
                    k.to_string(),
                    Val {
                        host: Some((*t).clone()),
                        dev: None,
                    },
                )
            })
            .collect();
        let mut devices = Vec::with_capacity(g.nodes.len());
        // A Relu folded into the Gemm / MatMul / Conv just before it (its index).
        let mut fused: Option<usize> = None;
        for (idx, n) in g.nodes.iter().enumerate() {
            let device = if fused == Some(idx) {
                Device::Gpu
            } else {
                let relu = fusable_relu(g, idx, &uses);
                let on_gpu = if let Some(b) = self.int8.get(&n.name) {
                    if let Some(y) = self.int8_step(n, b, &mut vals).await? {
                        vals.insert(
                            n.outputs.first().cloned().unwrap_or_default(),
                            Val {
                                host: Some(y),
                                dev: None,
                            },
                        );
                        devices.push(NodeDevice {
                            node: n.name.clone(),
                            op: n.op.name(),
                            device: Device::Gpu,
                        });
                        release(n, &mut uses, &mut vals);
                        continue;
                    }
                    None
                } else if self.on_gpu(n) {
                    self.gpu_step(n, &mut vals, relu.is_some())?
                } else {
                    None
                };
                match on_gpu {
                    Some((y, applied)) => {
                        let out = match relu {
                            Some(j) if applied => {
                                fused = Some(j);
                                &g.nodes[j]
                            }
                            _ => n,
                        };
                        let name = out.outputs.first().cloned().unwrap_or_default();
                        vals.insert(
                            name,
                            Val {
                                host: None,
                                dev: Some(y),
                            },
                        );
                        Device::Gpu
                    }
                    None => {
                        let outs = self.cpu_step(n, &mut vals).await?;
                        for (name, t) in n.outputs.iter().zip(outs) {
                            vals.insert(
                                name.clone(),
                                Val {
                                    host: Some(t),
                                    dev: None,
                                },
                            );
                        }
                        Device::Cpu
                    }
                }
            };
            devices.push(NodeDevice {
                node: n.name.clone(),
                op: n.op.name(),
                device,
            });
            release(n, &mut uses, &mut vals);
        }
        let mut outputs = Vec::with_capacity(g.outputs.len());
        for o in &g.outputs {
            let v = match vals.remove(o) {
                Some(Val { host: Some(t), .. }) => t,
                Some(Val { dev: Some(d), .. }) => self.ctx.download(&d).await?,
                _ => g
                    .weights
                    .get(o)
                    .cloned()
                    .ok_or_else(|| Error::Graph(format!("output `{o}` was not computed")))?,
            };
            outputs.push(v);
        }
        Ok(GpuRun { outputs, devices })
    }

    /// Whether `n` has a GPU kernel here (BatchNorm: when its statistics are weights; an
    /// integer matmul: when its `B` was packed).
    fn on_gpu(&self, n: &Node) -> bool {
        has_gpu_kernel(n) || self.affine.contains_key(&n.name) || self.int8.contains_key(&n.name)
    }

    /// Input `i` of `n` on the device (uploaded once and kept), `None` when absent.
    fn dev_input(
        &self,
        n: &Node,
        vals: &mut HashMap<String, Val>,
        i: usize,
    ) -> Result<Option<GpuTensor>> {
        let Some(name) = n.inputs.get(i).filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        if let Some(w) = self.weights.get(name) {
            return Ok(Some(w.clone()));
        }
        let missing = || {
            Error::Graph(format!(
                "node `{}` reads `{name}`, which is not computed",
                n.name
            ))
        };
        let v = vals.get_mut(name).ok_or_else(missing)?;
        if v.dev.is_none() {
            let host = v.host.as_ref().ok_or_else(missing)?;
            v.dev = Some(self.ctx.upload_tensor(host)?);
        }
        Ok(v.dev.clone())
    }

    /// Runs `n` on the GPU; `None` when its inputs' shapes need the CPU. With `relu`, a Gemm,
    /// MatMul or Conv applies the ReLU that follows it; the flag returned says whether it did.
    fn gpu_step(
        &self,
        n: &Node,
        vals: &mut HashMap<String, Val>,
        relu: bool,
    ) -> Result<Option<(GpuTensor, bool)>> {
        let ctx = &*self.ctx;
        let x = self.dev_input(n, vals, 0)?.ok_or_else(|| {
            Error::Graph(format!(
                "node `{}` ({}) is missing input #0",
                n.name,
                n.op.name()
            ))
        })?;
        let second = |vals: &mut HashMap<String, Val>| -> Result<GpuTensor> {
            self.dev_input(n, vals, 1)?.ok_or_else(|| {
                Error::Graph(format!(
                    "node `{}` ({}) is missing input #1",
                    n.name,
                    n.op.name()
                ))
            })
        };
        let y = match &n.op {
            Op::Gemm(a) => {
                let w = second(vals)?;
                let c = self.dev_input(n, vals, 2)?;
                let (sa, sb) = (x.shape(), w.shape());
                let (Ok(shapes), [ra, ca], [rb, cb]) = (
                    ops::infer_shape(n, &[Some(sa), Some(sb), c.as_ref().map(|c| c.shape())]),
                    sa,
                    sb,
                ) else {
                    return Ok(None);
                };
                let (m, k) = if a.trans_a { (*ca, *ra) } else { (*ra, *ca) };
                let nn = if a.trans_b { *rb } else { *cb };
                if let Some(c) = &c
                    && bias_strides(c.shape(), m, nn).is_err()
                {
                    return Ok(None);
                }
                let spec = MatmulSpec {
                    trans_a: a.trans_a,
                    trans_b: a.trans_b,
                    alpha: a.alpha,
                    beta: a.beta,
                    relu,
                    ..MatmulSpec::new(m, k, nn)
                };
                let out = shapes.into_iter().next().unwrap_or_else(|| vec![m, nn]);
                return Ok(Some((matmul(ctx, &spec, &x, &w, c.as_ref(), out)?, relu)));
            }
            Op::MatMul => {
                let w = second(vals)?;
                let Some((spec, out)) = matmul_spec(n, x.shape(), w.shape()) else {
                    return Ok(None);
                };
                let spec = MatmulSpec { relu, ..spec };
                return Ok(Some((matmul(ctx, &spec, &x, &w, None, out)?, relu)));
            }
            Op::Conv(a) => {
                let w = second(vals)?;
                let b = self.dev_input(n, vals, 2)?;
                let spec = ConvSpec {
                    relu,
                    ..ConvSpec::from_attrs(n, a, x.shape(), w.shape())?
                };
                if b.as_ref().is_some_and(|b| b.shape() != [spec.m]) {
                    return Ok(None);
                }
                return Ok(Some((conv2d(ctx, &spec, &x, &w, b.as_ref())?, relu)));
            }
            Op::MaxPool(a) => {
                let spec = PoolSpec::from_attrs(n, a, PoolKind::Max, x.shape())?;
                pool(ctx, &spec, &x)?
            }
            Op::AvgPool(a) => {
                let kind = PoolKind::Average {
                    count_include_pad: a.count_include_pad,
                };
                let spec = PoolSpec::from_attrs(n, a, kind, x.shape())?;
                pool(ctx, &spec, &x)?
            }
            Op::GlobalAvgPool => {
                if x.shape().len() != 4 {
                    return Ok(None);
                }
                pool(ctx, &PoolSpec::global_average(x.shape()), &x)?
            }
            Op::BatchNorm { .. } => {
                let Some((k, off)) = self.affine.get(&n.name) else {
                    return Ok(None);
                };
                let s = x.shape();
                if s.len() < 2 || s[1] != k.len() || s.len() > MAX_RANK {
                    return Ok(None);
                }
                let mut cs = vec![1; s.len() - 1];
                cs[0] = s[1];
                let scaled = binary(ctx, Binary::Mul, &x, &k.reshaped(cs.clone()))?;
                binary(ctx, Binary::Add, &scaled, &off.reshaped(cs))?
            }
            Op::Relu => unary(ctx, Unary::Relu, &x)?,
            Op::Clip { min, max } => unary(
                ctx,
                Unary::Clip {
                    min: *min,
                    max: *max,
                },
                &x,
            )?,
            Op::Sigmoid => unary(ctx, Unary::Sigmoid, &x)?,
            Op::Tanh => unary(ctx, Unary::Tanh, &x)?,
            Op::LeakyRelu { alpha } => unary(ctx, Unary::LeakyRelu { alpha: *alpha }, &x)?,
            Op::Add | Op::Sub | Op::Mul | Op::Div => {
                let b = second(vals)?;
                let fits =
                    ops::broadcast_shape(x.shape(), b.shape()).is_some_and(|s| s.len() <= MAX_RANK);
                if !fits {
                    return Ok(None);
                }
                let op = match n.op {
                    Op::Add => Binary::Add,
                    Op::Sub => Binary::Sub,
                    Op::Mul => Binary::Mul,
                    _ => Binary::Div,
                };
                binary(ctx, op, &x, &b)?
            }
            Op::Flatten { .. }
            | Op::Reshape { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Dropout { .. } => {
                let shape = ops::infer_shape(n, &[Some(x.shape())])?
                    .into_iter()
                    .next()
                    .ok_or_else(|| {
                        Error::Graph(format!("node `{}` has no output shape", n.name))
                    })?;
                if crate::tensor::checked_numel(&shape)? != x.len() {
                    return Ok(None);
                }
                x.reshaped(shape)
            }
            _ => return Ok(None),
        };
        Ok(Some((y, false)))
    }

    /// `n`'s inputs on the host (device values read back first); `None` for absent ones.
    async fn host_inputs<'a>(
        &'a self,
        n: &Node,
        vals: &'a mut HashMap<String, Val>,
    ) -> Result<Vec<Option<&'a Tensor>>> {
        for name in n.inputs.iter().filter(|s| !s.is_empty()) {
            if let Some(v) = vals.get_mut(name)
                && v.host.is_none()
                && let Some(d) = &v.dev
            {
                v.host = Some(self.ctx.download(d).await?);
            }
        }
        let vals = &*vals;
        Ok(n.inputs
            .iter()
            .map(|i| {
                if i.is_empty() {
                    None
                } else {
                    vals.get(i)
                        .and_then(|v| v.host.as_ref())
                        .or_else(|| self.graph.weights.get(i))
                }
            })
            .collect())
    }

    /// Runs `n` on the CPU reference, reading its device inputs back first.
    async fn cpu_step(&self, n: &Node, vals: &mut HashMap<String, Val>) -> Result<Vec<Tensor>> {
        let ins = self.host_inputs(n, vals).await?;
        Ok(ops::forward(n, &ins, Mode::Eval)?.0)
    }

    /// An integer matmul with its packed `B`: `A` (on the host: it comes from a quantizing op)
    /// goes to the int8 kernel, the exact i32 sums come back and are finished as the reference
    /// finishes them (so the bits agree). `None` when `A` or its zero point does not fit the
    /// kernel (several zero points, a value out of range, a wrong shape): the CPU runs it.
    async fn int8_step(
        &self,
        n: &Node,
        b: &PackedInt8B,
        vals: &mut HashMap<String, Val>,
    ) -> Result<Option<Tensor>> {
        let Some((zi, dt)) = int_matmul_a(&n.op) else {
            return Ok(None);
        };
        let ins = self.host_inputs(n, vals).await?;
        let Some(x) = ins.first().copied().flatten() else {
            return Ok(None);
        };
        let zero = match n.inputs.get(zi).filter(|s| !s.is_empty()) {
            None => one_zero(None, dt),
            Some(_) => ins
                .get(zi)
                .copied()
                .flatten()
                .and_then(|z| one_zero(Some(z), dt)),
        };
        let k = x.shape().last().copied().unwrap_or(0);
        let (Some(zero), Some(a)) = (zero, as_i8(x, dt)) else {
            return Ok(None);
        };
        if x.ndim() == 0 || k == 0 || k != b.k() {
            return Ok(None);
        }
        let shapes: Vec<Option<&[usize]>> = ins.iter().map(|t| t.map(|t| t.shape())).collect();
        let Some(shape) = ops::infer_shape(n, &shapes)?.into_iter().next() else {
            return Ok(None);
        };
        let m = x.len() / k.max(1);
        let acc = b.matmul(&self.ctx, &a, zero, m).await?;
        Ok(Some(ops::finish_int_matmul(n, &ins, &shape, b.n(), &acc)?))
    }
}

/// Drops the values whose last reader was `n`.
fn release(n: &Node, uses: &mut HashMap<String, usize>, vals: &mut HashMap<String, Val>) {
    for i in n.inputs.iter().filter(|s| !s.is_empty()) {
        if let Some(u) = uses.get_mut(i) {
            *u -= 1;
            if *u == 0 {
                vals.remove(i);
            }
        }
    }
}

/// The index of the Relu that directly follows node `idx` and is the only reader of its
/// output, when that node is a Gemm, MatMul or Conv (whose kernels can apply it).
fn fusable_relu(g: &Graph, idx: usize, uses: &HashMap<String, usize>) -> Option<usize> {
    let n = &g.nodes[idx];
    if !matches!(n.op, Op::Gemm(_) | Op::MatMul | Op::Conv(_)) || n.outputs.len() != 1 {
        return None;
    }
    let next = g.nodes.get(idx + 1)?;
    let only_reader = uses.get(&n.outputs[0]) == Some(&1);
    (matches!(next.op, Op::Relu)
        && next.outputs.len() == 1
        && next.inputs.first() == n.outputs.first()
        && only_reader)
        .then_some(idx + 1)
}

/// The GPU form of a MatMul of `sa` by `sb` and its output shape, or `None` for shapes the
/// kernel does not batch (vectors, batch dims that are neither equal nor one shared matrix).
pub(crate) fn matmul_spec(
    n: &Node,
    sa: &[usize],
    sb: &[usize],
) -> Option<(MatmulSpec, Vec<usize>)> {
    if sa.len() < 2 || sb.len() < 2 {
        return None;
    }
    let out = ops::infer_shape(n, &[Some(sa), Some(sb)])
        .ok()?
        .into_iter()
        .next()?;
    let (m, k, nn) = (sa[sa.len() - 2], sa[sa.len() - 1], sb[sb.len() - 1]);
    let ob = &out[..out.len() - 2];
    let batch: usize = ob.iter().product();
    // A side is usable when it holds one matrix (shared) or exactly the output's batch dims.
    let fits = |s: &[usize]| -> Option<bool> {
        let b = &s[..s.len() - 2];
        if b.iter().product::<usize>() == 1 {
            return Some(true);
        }
        let pad = ob.len().checked_sub(b.len())?;
        (ob[..pad].iter().all(|&d| d == 1) && ob[pad..] == *b).then_some(false)
    };
    let broadcast_a = fits(sa)?;
    let broadcast_b = fits(sb)?;
    Some((
        MatmulSpec {
            batch,
            broadcast_a,
            broadcast_b,
            ..MatmulSpec::new(m, k, nn)
        },
        out,
    ))
}

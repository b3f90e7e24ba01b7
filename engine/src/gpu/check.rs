//! The GPU launchers and the graph runner against the CPU reference: the one suite that
//! `engine/tests/gpu.rs` runs natively (lavapipe) and `tests/tests/gpu.rs` runs in headless
//! Chromium (SwiftShader). Sizes are odd on purpose: 1, 3, 17, 33, 65, tails past every tile,
//! empty dimensions.

use super::context::{GpuContext, GpuTensor};
use super::conv2d::{ConvSpec, conv2d};
use super::elementwise::{Binary, Unary, binary, unary};
use super::int8_matmul::matmul_int8;
use super::matmul::{MatmulSpec, matmul};
use super::pool::{PoolKind, PoolSpec, pool};
use super::session::{Device, GpuSession, matmul_spec};
use crate::graph::{ConvAttrs, GemmAttrs, Node, Op, PoolAttrs};
use crate::ops::{self, Mode};
use crate::rng::Rng;
use crate::tensor::Tensor;
use crate::{Error, Result};

/// Largest accepted `max |gpu − cpu| / max |cpu|` over one result.
pub const TOLERANCE: f32 = 1e-4;

/// What [`selftest`] checked.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SelfTest {
    /// Cases compared, per launcher: `(launcher, cases)`.
    pub cases: Vec<(&'static str, usize)>,
    /// Largest relative error seen over all f32 cases.
    pub max_rel_err: f32,
}

impl SelfTest {
    /// Cases over all launchers.
    pub fn total(&self) -> usize {
        self.cases.iter().map(|c| c.1).sum()
    }
}

/// How a graph run on the GPU compared with [`crate::exec::run`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct GraphCheck {
    /// Largest relative error over the outputs.
    pub max_rel_err: f32,
    /// Largest `max − min` within one output (a constant output would prove little).
    pub output_spread: f32,
    /// Nodes that ran on the GPU.
    pub gpu_nodes: usize,
    /// Nodes that ran on the CPU reference.
    pub cpu_nodes: usize,
    /// `(node, op, device)` in order.
    pub devices: Vec<(String, &'static str, Device)>,
}

fn random(rng: &mut Rng, shape: &[usize]) -> Result<Tensor> {
    let n = crate::tensor::checked_numel(shape)?;
    crate::tensor::from_vec(shape, (0..n).map(|_| rng.uniform() * 2.0 - 1.0).collect())
}

/// `max |got − want| / max |want|` (0 for empty tensors); fails on differing shapes.
pub fn rel_err(what: &str, got: &Tensor, want: &Tensor) -> Result<f32> {
    if got.shape() != want.shape() {
        return Err(Error::Invalid(format!(
            "{what}: GPU shape {:?}, CPU shape {:?}",
            got.shape(),
            want.shape()
        )));
    }
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    let mut worst = 0f32;
    for (g, w) in got.iter().zip(want.iter()) {
        let e = (g - w).abs() / scale;
        if e.is_nan() {
            return Err(Error::Invalid(format!("{what}: GPU gave {g}, CPU {w}")));
        }
        worst = worst.max(e);
    }
    Ok(worst)
}

struct Suite<'a> {
    ctx: &'a GpuContext,
    rng: Rng,
    report: SelfTest,
}

impl Suite<'_> {
    fn up(&self, t: &Tensor) -> Result<GpuTensor> {
        self.ctx.upload_tensor(t)
    }

    async fn compare(
        &mut self,
        launcher: &'static str,
        what: String,
        got: &GpuTensor,
        want: &Tensor,
    ) -> Result<()> {
        let got = self.ctx.download(got).await?;
        let e = rel_err(&what, &got, want)?;
        if e > TOLERANCE {
            return Err(Error::Invalid(format!(
                "{launcher} {what}: relative error {e:e} exceeds {TOLERANCE:e}"
            )));
        }
        self.report.max_rel_err = self.report.max_rel_err.max(e);
        match self.report.cases.iter_mut().find(|c| c.0 == launcher) {
            Some(c) => c.1 += 1,
            None => self.report.cases.push((launcher, 1)),
        }
        Ok(())
    }

    fn reference(&self, op: Op, ins: &[Option<&Tensor>]) -> Result<Tensor> {
        let names: Vec<String> = (0..ins.len()).map(|i| format!("i{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let node = Node::new("ref", op, &refs);
        ops::forward(&node, ins, Mode::Eval)?
            .0
            .into_iter()
            .next()
            .ok_or_else(|| Error::Graph("the reference gave no output".into()))
    }

    async fn gemm(&mut self) -> Result<()> {
        let sizes = [
            (1, 1, 1),
            (3, 17, 5),
            (17, 33, 1),
            (33, 65, 17),
            (65, 3, 33),
            (64, 64, 64),
            (1, 65, 130),
            (130, 1, 1),
            (2, 0, 3),
            (0, 3, 4),
            (5, 4, 0),
        ];
        for (case, &(m, k, n)) in sizes.iter().enumerate() {
            for variant in 0..4usize {
                let attrs = GemmAttrs {
                    alpha: if variant == 3 { 0.5 } else { 1.0 },
                    beta: if variant == 2 { -2.0 } else { 1.0 },
                    trans_a: (case + variant) % 2 == 1,
                    trans_b: variant % 2 == 1,
                };
                let sa = if attrs.trans_a { [k, m] } else { [m, k] };
                let sb = if attrs.trans_b { [n, k] } else { [k, n] };
                let bias_shape: Option<Vec<usize>> = match variant {
                    0 => None,
                    1 => Some(vec![n]),
                    2 => Some(vec![m, 1]),
                    _ => Some(vec![m, n]),
                };
                let a = random(&mut self.rng, &sa)?;
                let b = random(&mut self.rng, &sb)?;
                let c = bias_shape.map(|s| random(&mut self.rng, &s)).transpose()?;
                let want =
                    self.reference(Op::Gemm(attrs.clone()), &[Some(&a), Some(&b), c.as_ref()])?;
                let spec = MatmulSpec {
                    trans_a: attrs.trans_a,
                    trans_b: attrs.trans_b,
                    alpha: attrs.alpha,
                    beta: attrs.beta,
                    ..MatmulSpec::new(m, k, n)
                };
                let cd = c.as_ref().map(|c| self.up(c)).transpose()?;
                let got = matmul(
                    self.ctx,
                    &spec,
                    &self.up(&a)?,
                    &self.up(&b)?,
                    cd.as_ref(),
                    vec![m, n],
                )?;
                self.compare("matmul", format!("gemm {m}x{k}x{n} {attrs:?}"), &got, &want)
                    .await?;
            }
        }
        // A fused ReLU.
        let (a, b) = (
            random(&mut self.rng, &[17, 33])?,
            random(&mut self.rng, &[33, 65])?,
        );
        let want = self
            .reference(Op::MatMul, &[Some(&a), Some(&b)])?
            .mapv(|v| v.max(0.0));
        let spec = MatmulSpec {
            relu: true,
            ..MatmulSpec::new(17, 33, 65)
        };
        let got = matmul(
            self.ctx,
            &spec,
            &self.up(&a)?,
            &self.up(&b)?,
            None,
            vec![17, 65],
        )?;
        self.compare("matmul", "17x33x65 + relu".into(), &got, &want)
            .await
    }

    async fn batched_matmul(&mut self) -> Result<()> {
        let pairs: [(&[usize], &[usize]); 6] = [
            (&[2, 3, 5, 7], &[7, 4]),
            (&[5, 7], &[3, 7, 4]),
            (&[2, 3, 5, 7], &[2, 3, 7, 4]),
            (&[1, 5, 7], &[4, 7, 2]),
            (&[3, 17, 33], &[3, 33, 65]),
            (&[0, 2, 3], &[3, 4]),
        ];
        let node = Node::new("mm", Op::MatMul, &["a", "b"]);
        for (sa, sb) in pairs {
            let a = random(&mut self.rng, sa)?;
            let b = random(&mut self.rng, sb)?;
            let want = self.reference(Op::MatMul, &[Some(&a), Some(&b)])?;
            let (spec, out) = matmul_spec(&node, sa, sb).ok_or_else(|| {
                Error::Invalid(format!("MatMul {sa:?} x {sb:?} should run on the GPU"))
            })?;
            let got = matmul(self.ctx, &spec, &self.up(&a)?, &self.up(&b)?, None, out)?;
            self.compare("matmul", format!("batched {sa:?} x {sb:?}"), &got, &want)
                .await?;
        }
        Ok(())
    }

    async fn conv(&mut self) -> Result<()> {
        // (n, c, h, w, m, k, stride, pad, dilation, groups)
        let cases = [
            (1, 1, 1, 1, 1, 1, 1, 0, 1, 1),
            (1, 3, 17, 17, 5, 3, 1, 1, 1, 1),
            (2, 4, 9, 13, 6, 3, 2, 1, 1, 2),
            (1, 8, 17, 17, 8, 3, 1, 1, 1, 8),
            (3, 6, 33, 7, 6, 3, 2, 0, 2, 6),
            (1, 2, 5, 5, 3, 5, 1, 2, 1, 1),
            (1, 16, 14, 14, 32, 1, 1, 0, 1, 1),
            (2, 1, 28, 28, 6, 5, 1, 0, 1, 1),
            (0, 3, 5, 5, 2, 3, 1, 1, 1, 1),
        ];
        for (i, &(n, c, h, w, m, k, s, p, d, g)) in cases.iter().enumerate() {
            let attrs = ConvAttrs {
                kernel: [k, k],
                strides: [s, s],
                pads: [p, p, p + (i % 2), p],
                dilations: [d, d],
                groups: g,
                ..ConvAttrs::new([k, k])
            };
            let x = random(&mut self.rng, &[n, c, h, w])?;
            let wt = random(&mut self.rng, &[m, c / g, k, k])?;
            let b = (i % 3 != 0)
                .then(|| random(&mut self.rng, &[m]))
                .transpose()?;
            let want =
                self.reference(Op::Conv(attrs.clone()), &[Some(&x), Some(&wt), b.as_ref()])?;
            let node = Node::new("conv", Op::Conv(attrs.clone()), &["x", "w"]);
            let spec = ConvSpec::from_attrs(&node, &attrs, x.shape(), wt.shape())?;
            let bd = b.as_ref().map(|b| self.up(b)).transpose()?;
            let got = conv2d(self.ctx, &spec, &self.up(&x)?, &self.up(&wt)?, bd.as_ref())?;
            self.compare("conv2d", format!("{:?}", cases[i]), &got, &want)
                .await?;
        }
        Ok(())
    }

    async fn pools(&mut self) -> Result<()> {
        // (shape, kernel, stride, pads, dilation, ceil_mode, count_include_pad)
        type Case = ([usize; 4], usize, usize, [usize; 4], usize, bool, bool);
        let cases: [Case; 6] = [
            ([1, 1, 1, 1], 1, 1, [0; 4], 1, false, false),
            ([2, 3, 28, 28], 2, 2, [0; 4], 1, false, false),
            ([1, 4, 17, 17], 3, 2, [1, 1, 1, 1], 1, true, false),
            ([1, 4, 17, 13], 3, 2, [1, 0, 1, 2], 1, true, true),
            ([3, 2, 9, 9], 2, 1, [0; 4], 2, false, false),
            ([0, 2, 4, 4], 2, 2, [0; 4], 1, false, false),
        ];
        for (shape, k, s, pads, d, ceil_mode, cip) in cases {
            let a = PoolAttrs {
                kernel: [k, k],
                strides: [s, s],
                pads,
                dilations: [d, d],
                ceil_mode,
                count_include_pad: cip,
                ..PoolAttrs::square(k)
            };
            let x = random(&mut self.rng, &shape)?;
            let xd = self.up(&x)?;
            for is_max in [true, false] {
                if !is_max && d != 1 {
                    continue;
                }
                let (op, kind) = if is_max {
                    (Op::MaxPool(a.clone()), PoolKind::Max)
                } else {
                    (
                        Op::AvgPool(a.clone()),
                        PoolKind::Average {
                            count_include_pad: cip,
                        },
                    )
                };
                let want = self.reference(op.clone(), &[Some(&x)])?;
                let node = Node::new("pool", op, &["x"]);
                let spec = PoolSpec::from_attrs(&node, &a, kind, &shape)?;
                let got = pool(self.ctx, &spec, &xd)?;
                self.compare(
                    "pool",
                    format!("{kind:?} {shape:?} k{k} s{s} {pads:?}"),
                    &got,
                    &want,
                )
                .await?;
            }
            let want = self.reference(Op::GlobalAvgPool, &[Some(&x)])?;
            let got = pool(self.ctx, &PoolSpec::global_average(&shape), &xd)?;
            self.compare("pool", format!("global average {shape:?}"), &got, &want)
                .await?;
        }
        Ok(())
    }

    async fn elementwise(&mut self, big: bool) -> Result<()> {
        let unaries = [
            (Unary::Relu, Op::Relu),
            (
                Unary::Clip {
                    min: -0.25,
                    max: 0.5,
                },
                Op::Clip {
                    min: -0.25,
                    max: 0.5,
                },
            ),
            (Unary::Sigmoid, Op::Sigmoid),
            (Unary::Tanh, Op::Tanh),
            (
                Unary::LeakyRelu { alpha: 0.1 },
                Op::LeakyRelu { alpha: 0.1 },
            ),
        ];
        let shapes: [&[usize]; 5] = [&[0], &[1], &[17], &[3, 65], &[2, 3, 5, 7]];
        for (u, op) in unaries {
            for s in shapes {
                let x = random(&mut self.rng, s)?.mapv(|v| v * 4.0);
                let want = self.reference(op.clone(), &[Some(&x)])?;
                let got = unary(self.ctx, u, &self.up(&x)?)?;
                self.compare("elementwise", format!("{u:?} {s:?}"), &got, &want)
                    .await?;
            }
        }
        if big {
            // More workgroups than one dispatch row holds (65535 × 64): the grid wraps into y.
            let x = random(&mut self.rng, &[65_535 * 64 + 17])?;
            let want = x.mapv(|v| v.max(0.0));
            let got = unary(self.ctx, Unary::Relu, &self.up(&x)?)?;
            self.compare(
                "elementwise",
                "relu over 4194257 values".into(),
                &got,
                &want,
            )
            .await?;
        }
        let pairs: [(&[usize], &[usize]); 8] = [
            (&[2, 3, 4, 5], &[3, 1, 1]),
            (&[17], &[1]),
            (&[], &[5]),
            (&[1, 17], &[33, 1]),
            (&[3, 65], &[3, 65]),
            (&[2, 1, 3, 1, 2, 3], &[1, 4, 2, 1]),
            (&[0, 3], &[3]),
            (&[1, 10], &[10]),
        ];
        let ops = [
            (Binary::Add, Op::Add),
            (Binary::Sub, Op::Sub),
            (Binary::Mul, Op::Mul),
            (Binary::Div, Op::Div),
        ];
        for (i, (sa, sb)) in pairs.into_iter().enumerate() {
            let a = random(&mut self.rng, sa)?;
            // Divisors kept away from 0.
            let b = random(&mut self.rng, sb)?.mapv(|v| if v.abs() < 0.1 { 0.5 } else { v });
            for (bop, op) in &ops {
                if i % 2 == 1 && *bop == Binary::Div {
                    continue;
                }
                let want = self.reference(op.clone(), &[Some(&a), Some(&b)])?;
                let got = binary(self.ctx, *bop, &self.up(&a)?, &self.up(&b)?)?;
                self.compare("elementwise", format!("{bop:?} {sa:?} {sb:?}"), &got, &want)
                    .await?;
            }
        }
        Ok(())
    }

    async fn int8(&mut self) -> Result<()> {
        let cases = [
            (1, 1, 1, 0, 0),
            (3, 5, 7, 3, -2),
            (17, 33, 65, -128, 127),
            (65, 1, 3, 0, 5),
            (33, 130, 17, 1, 0),
            (0, 4, 2, 0, 0),
            (4, 0, 3, 7, 7),
        ];
        for (m, k, n, za, zb) in cases {
            let mut byte = || (self.rng.next_u64() & 0xff) as u8 as i8;
            let a: Vec<i8> = (0..m * k).map(|_| byte()).collect();
            let b: Vec<i8> = (0..k * n).map(|_| byte()).collect();
            let mut want = vec![0i32; m * n];
            for r in 0..m {
                for c in 0..n {
                    want[r * n + c] = (0..k)
                        .map(|i| {
                            (i32::from(a[r * k + i]) - i32::from(za))
                                * (i32::from(b[i * n + c]) - i32::from(zb))
                        })
                        .sum();
                }
            }
            let got = matmul_int8(self.ctx, &a, za, &b, zb, (m, k, n)).await?;
            if got != want {
                let first = got.iter().zip(&want).position(|(g, w)| g != w);
                return Err(Error::Invalid(format!(
                    "int8 matmul {m}x{k}x{n} (zero points {za}, {zb}) differs at {first:?}"
                )));
            }
            match self.report.cases.iter_mut().find(|c| c.0 == "int8_matmul") {
                Some(c) => c.1 += 1,
                None => self.report.cases.push(("int8_matmul", 1)),
            }
        }
        Ok(())
    }
}

/// Compares every launcher with the CPU reference; the first mismatch is the error. `big`
/// adds a 4-million-element case that spans more than one row of workgroups.
pub async fn selftest(ctx: &GpuContext, big: bool) -> Result<SelfTest> {
    let mut s = Suite {
        ctx,
        rng: Rng::new(0x6770_7500),
        report: SelfTest::default(),
    };
    s.gemm().await?;
    s.batched_matmul().await?;
    s.conv().await?;
    s.pools().await?;
    s.elementwise(big).await?;
    s.int8().await?;
    ctx.check()?;
    Ok(s.report)
}

/// Runs `session` and [`crate::exec::run`] on the same random input of batch `batch` (for
/// the first graph input) and compares every output; a relative error above [`TOLERANCE`]
/// is an error.
pub async fn compare_graph(session: &GpuSession, batch: usize, seed: u64) -> Result<GraphCheck> {
    let g = session.graph();
    let input = g
        .inputs
        .first()
        .ok_or_else(|| Error::Graph("the graph has no input".into()))?;
    // Pixels preprocessed to [0, 1), as the zoo models see them.
    let x = random(&mut Rng::new(seed), &input.concrete(batch))?.mapv(|v| (v + 1.0) / 2.0);
    let feeds = [(input.name.as_str(), &x)];
    let want = crate::exec::run(g, &feeds)?;
    let got = session.run(&feeds).await?;
    let mut worst = 0f32;
    let mut spread = 0f32;
    for (i, (gt, wt)) in got.outputs.iter().zip(&want).enumerate() {
        worst = worst.max(rel_err(&format!("{} output #{i}", g.name), gt, wt)?);
        let (lo, hi) = wt
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            });
        spread = spread.max(hi - lo);
    }
    if got.outputs.len() != want.len() || worst > TOLERANCE {
        return Err(Error::Invalid(format!(
            "{}: GPU run differs from the CPU reference (relative error {worst:e}, {} vs {} outputs)",
            g.name,
            got.outputs.len(),
            want.len()
        )));
    }
    let gpu_nodes = got
        .devices
        .iter()
        .filter(|d| d.device == Device::Gpu)
        .count();
    Ok(GraphCheck {
        max_rel_err: worst,
        output_spread: spread,
        gpu_nodes,
        cpu_nodes: got.devices.len() - gpu_nodes,
        devices: got
            .devices
            .into_iter()
            .map(|d| (d.node, d.op, d.device))
            .collect(),
    })
}

/// Runs `reps` products of two `size × size` matrices and reads the last one back: time it
/// from outside for a GFLOP/s figure (`2·size³·reps` flops).
pub async fn bench_matmul(ctx: &GpuContext, size: usize, reps: usize) -> Result<()> {
    let mut rng = Rng::new(7);
    let a = ctx.upload_tensor(&random(&mut rng, &[size, size])?)?;
    let b = ctx.upload_tensor(&random(&mut rng, &[size, size])?)?;
    let spec = MatmulSpec::new(size, size, size);
    let mut last = None;
    for _ in 0..reps.max(1) {
        last = Some(matmul(ctx, &spec, &a, &b, None, vec![size, size])?);
    }
    if let Some(c) = last {
        ctx.download(&c).await?;
    }
    Ok(())
}

/// The integer matmuls of a [`GpuSession`]: dynamic quantization (`DynamicQuantizeLinear`, on
/// the CPU) feeding an int8 `MatMulInteger` (one zero point for `B`, then one per column) and a
/// uint8 `QLinearMatMul` with per-column scales, K = 37, at batch 1 and 7. Every output must
/// equal the reference's bit for bit, and the matmuls must run on the GPU (the per-column
/// `MatMulInteger` on the CPU). Returns the number of runs compared.
pub async fn integer_matmuls(ctx: &std::sync::Arc<GpuContext>) -> Result<usize> {
    use crate::graph::{Dim, Graph, ValueInfo};
    use crate::tensor::{DType, from_vec};
    let (k, n1, n2) = (37, 19, 5);
    let mut runs = 0;
    for per_column_zero in [false, true] {
        let mut g = Graph {
            name: "int-matmuls".into(),
            ..Default::default()
        };
        g.inputs.push(ValueInfo {
            name: "x".into(),
            shape: vec![Dim::Sym("N".into()), Dim::Fixed(k)],
        });
        let w1: Vec<f32> = (0..k * n1)
            .map(|i| ((i * 37) % 256) as f32 - 128.0)
            .collect();
        let w2: Vec<f32> = (0..k * n2).map(|i| ((i * 91) % 256) as f32).collect();
        let z1: Vec<f32> = if per_column_zero {
            (0..n1).map(|j| j as f32 - 9.0).collect()
        } else {
            vec![3.0]
        };
        let weights = [
            ("w1", from_vec(&[k, n1], w1)?),
            ("z1", from_vec(&[z1.len()], z1)?),
            ("w2", from_vec(&[k, n2], w2)?),
            ("s2", from_vec(&[n2], vec![0.01, 0.02, 0.005, 0.03, 0.015])?),
            ("z2", from_vec(&[1], vec![128.0])?),
            ("ys", from_vec(&[1], vec![0.5])?),
            ("yz", from_vec(&[1], vec![100.0])?),
        ];
        for (name, t) in weights {
            g.weights.insert(name.into(), t);
        }
        let mut dq = Node::new("dq", Op::DynamicQuantizeLinear, &["x"]);
        dq.outputs = vec!["q".into(), "qs".into(), "qz".into()];
        g.nodes.push(dq);
        g.nodes.push(Node::new(
            "mmi",
            Op::MatMulInteger {
                a: DType::U8,
                b: DType::I8,
            },
            &["q", "w1", "qz", "z1"],
        ));
        g.nodes.push(Node::new(
            "qmm",
            Op::QLinearMatMul {
                a: DType::U8,
                b: DType::U8,
                y: DType::U8,
            },
            &["q", "qs", "qz", "w2", "s2", "z2", "ys", "yz"],
        ));
        g.outputs = vec!["mmi".into(), "qmm".into()];
        let session = GpuSession::new(ctx.clone(), &g)?;
        for batch in [1, 7] {
            let x: Vec<f32> = (0..batch * k)
                .map(|i| ((i * 53) % 97) as f32 / 13.0 - 3.0)
                .collect();
            let x = from_vec(&[batch, k], x)?;
            let want = crate::exec::run(&g, &[("x", &x)])?;
            let got = session.run(&[("x", &x)]).await?;
            let case = format!("integer matmuls, batch {batch}, per-column zero {per_column_zero}");
            if got.outputs != want {
                return Err(Error::Invalid(format!(
                    "{case}: the GPU outputs differ from the reference"
                )));
            }
            if !want[0].iter().any(|&v| v.abs() > 1000.0) {
                return Err(Error::Invalid(format!("{case}: sums too small to test")));
            }
            let mmi = if per_column_zero {
                Device::Cpu
            } else {
                Device::Gpu
            };
            let expect = [("dq", Device::Cpu), ("mmi", mmi), ("qmm", Device::Gpu)];
            let devices: Vec<(&str, Device)> = got
                .devices
                .iter()
                .map(|d| (d.node.as_str(), d.device))
                .collect();
            if devices != expect {
                return Err(Error::Invalid(format!(
                    "{case}: ran on {devices:?}, expected {expect:?}"
                )));
            }
            runs += 1;
        }
    }
    Ok(runs)
}

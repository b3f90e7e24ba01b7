//! The model zoo: architectures Lithe ships trained on MNIST, with their initialisation and the
//! training recipe that produced the committed weights.

use crate::data::Preprocess;
use crate::graph::{ConvAttrs, Dim, GemmAttrs, Graph, Node, Op, PoolAttrs, ValueInfo};
use crate::rng::Rng;
use crate::tensor::Tensor;
use crate::train::{Optimizer, Schedule, TrainConfig};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// A zoo architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// 784-300-100-10 MLP (LeCun et al. 1998; Han et al.'s pruning baseline).
    Lenet300100,
    /// conv 20@5×5, pool, conv 50@5×5, pool, fc 500, fc 10 (Caffe's LeNet-5).
    Lenet5,
    /// A small MobileNet-style CNN: depthwise-separable blocks with BatchNorm and ReLU6.
    Mobilenet,
    /// 784-32-10, the student for distillation.
    TinyMlp,
}

impl Arch {
    /// Every architecture, in display order.
    pub const ALL: [Arch; 4] = [
        Arch::Lenet300100,
        Arch::Lenet5,
        Arch::Mobilenet,
        Arch::TinyMlp,
    ];

    /// The name used on the command line and in file names.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Lenet300100 => "lenet-300-100",
            Arch::Lenet5 => "lenet-5",
            Arch::Mobilenet => "mobilenet",
            Arch::TinyMlp => "tiny-mlp",
        }
    }

    /// Looks up an architecture by [`Arch::name`].
    pub fn from_name(s: &str) -> Result<Arch> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown architecture `{s}`; known: {}",
                    Arch::ALL.map(|a| a.name()).join(", ")
                ))
            })
    }

    /// The recipe used to train the shipped weights.
    pub fn train_config(self, seed: u64) -> TrainConfig {
        let base = TrainConfig {
            epochs: 10,
            batch_size: 64,
            lr: 1e-3,
            optimizer: Optimizer::adam(),
            weight_decay: 0.0,
            schedule: Schedule::Cosine { min_factor: 0.01 },
            seed,
            preprocess: None,
            log_every: 100,
            augment_shift: 0,
        };
        match self {
            Arch::Lenet300100 => TrainConfig {
                epochs: 12,
                weight_decay: 1e-4,
                ..base
            },
            Arch::Lenet5 => TrainConfig { epochs: 8, ..base },
            Arch::Mobilenet => TrainConfig {
                epochs: 10,
                lr: 2e-3,
                augment_shift: 2,
                ..base
            },
            Arch::TinyMlp => TrainConfig { epochs: 10, ..base },
        }
    }
}

/// Square kernel size, stride, padding and groups of a zoo convolution.
#[derive(Clone, Copy)]
struct ConvSpec {
    k: usize,
    stride: usize,
    pad: usize,
    groups: usize,
}

impl ConvSpec {
    const fn new(k: usize, stride: usize, pad: usize, groups: usize) -> Self {
        ConvSpec {
            k,
            stride,
            pad,
            groups,
        }
    }
}

/// Graph under construction with deterministic initialisation.
struct Builder {
    g: Graph,
    rng: Rng,
    last: String,
}

impl Builder {
    fn new(name: &str, seed: u64) -> Self {
        let mut g = Graph {
            name: name.to_string(),
            ..Graph::default()
        };
        g.inputs.push(ValueInfo {
            name: "input".into(),
            shape: vec![
                Dim::Sym("N".into()),
                Dim::Fixed(1),
                Dim::Fixed(28),
                Dim::Fixed(28),
            ],
        });
        g.outputs.push("logits".into());
        g.metadata.insert(
            "lithe.preprocess".into(),
            Preprocess::default().to_metadata(),
        );
        g.metadata.insert("lithe.arch".into(), name.into());
        g.metadata.insert("lithe.seed".into(), seed.to_string());
        Builder {
            g,
            rng: Rng::new(seed),
            last: "input".into(),
        }
    }

    /// He-normal initialised tensor (`std = sqrt(2 / fan_in)`).
    fn he(&mut self, shape: &[usize], fan_in: usize) -> Tensor {
        let std = (2.0 / fan_in as f32).sqrt();
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.rng.normal() * std).collect();
        Tensor::from_shape_vec(ndarray::IxDyn(shape), v)
            .unwrap_or_else(|_| crate::tensor::zeros(shape))
    }

    fn node(&mut self, name: &str, op: Op, extra: &[&str]) -> &mut Self {
        let mut ins = vec![self.last.as_str()];
        ins.extend_from_slice(extra);
        let n = Node::new(name, op, &ins);
        self.last = name.to_string();
        self.g.nodes.push(n);
        self
    }

    fn dense(&mut self, name: &str, inp: usize, out: usize) -> &mut Self {
        let (w, b) = (format!("{name}.weight"), format!("{name}.bias"));
        let wt = self.he(&[out, inp], inp);
        self.g.weights.insert(w.clone(), wt);
        self.g
            .weights
            .insert(b.clone(), crate::tensor::zeros(&[out]));
        self.node(
            name,
            Op::Gemm(GemmAttrs {
                trans_b: true,
                ..GemmAttrs::default()
            }),
            &[&w, &b],
        )
    }

    fn conv(
        &mut self,
        name: &str,
        cin: usize,
        cout: usize,
        spec: ConvSpec,
        bias: bool,
    ) -> &mut Self {
        let ConvSpec {
            k,
            stride,
            pad,
            groups,
        } = spec;
        let w = format!("{name}.weight");
        let fan_in = cin / groups * k * k;
        let wt = self.he(&[cout, cin / groups, k, k], fan_in);
        self.g.weights.insert(w.clone(), wt);
        let attrs = ConvAttrs {
            strides: [stride; 2],
            pads: [pad; 4],
            groups,
            ..ConvAttrs::new([k, k])
        };
        if bias {
            let b = format!("{name}.bias");
            self.g
                .weights
                .insert(b.clone(), crate::tensor::zeros(&[cout]));
            self.node(name, Op::Conv(attrs), &[&w, &b])
        } else {
            self.node(name, Op::Conv(attrs), &[&w])
        }
    }

    fn bn(&mut self, name: &str, c: usize) -> &mut Self {
        let names = ["scale", "bias", "mean", "var"].map(|s| format!("{name}.{s}"));
        let ones = Tensor::from_elem(ndarray::IxDyn(&[c]), 1.0);
        let zeros = crate::tensor::zeros(&[c]);
        for (n, t) in names.iter().zip([ones.clone(), zeros.clone(), zeros, ones]) {
            self.g.weights.insert(n.clone(), t);
        }
        let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        self.node(
            name,
            Op::BatchNorm {
                epsilon: 1e-5,
                momentum: 0.9,
            },
            &refs,
        )
    }

    fn act(&mut self, name: &str, op: Op) -> &mut Self {
        self.node(name, op, &[])
    }

    fn finish(mut self) -> Result<Graph> {
        if let Some(n) = self.g.nodes.last_mut() {
            n.outputs = vec!["logits".into()];
        }
        self.g.validate()?;
        Ok(self.g)
    }
}

/// Builds `arch` with fresh weights drawn from `seed`.
pub fn build(arch: Arch, seed: u64) -> Result<Graph> {
    let mut b = Builder::new(arch.name(), seed);
    let relu6 = || Op::Clip { min: 0.0, max: 6.0 };
    match arch {
        Arch::Lenet300100 => {
            b.act("flatten", Op::Flatten { axis: 1 })
                .dense("fc1", 784, 300)
                .act("relu1", Op::Relu)
                .dense("fc2", 300, 100)
                .act("relu2", Op::Relu)
                .dense("fc3", 100, 10);
        }
        Arch::TinyMlp => {
            b.act("flatten", Op::Flatten { axis: 1 })
                .dense("fc1", 784, 32)
                .act("relu1", Op::Relu)
                .dense("fc2", 32, 10);
        }
        Arch::Lenet5 => {
            b.conv("conv1", 1, 20, ConvSpec::new(5, 1, 0, 1), true)
                .act("pool1", Op::MaxPool(PoolAttrs::square(2)))
                .act("relu1", Op::Relu)
                .conv("conv2", 20, 50, ConvSpec::new(5, 1, 0, 1), true)
                .act("pool2", Op::MaxPool(PoolAttrs::square(2)))
                .act("relu2", Op::Relu)
                .act("flatten", Op::Flatten { axis: 1 })
                .dense("fc1", 800, 500)
                .act("relu3", Op::Relu)
                .dense("fc2", 500, 10);
        }
        Arch::Mobilenet => {
            b.conv("stem", 1, 16, ConvSpec::new(3, 1, 1, 1), false)
                .bn("stem_bn", 16)
                .act("stem_relu", relu6());
            let blocks = [(16, 32, 2), (32, 64, 1), (64, 64, 2), (64, 128, 2)];
            for (i, (cin, cout, stride)) in blocks.into_iter().enumerate() {
                let p = format!("block{}", i + 1);
                b.conv(
                    &format!("{p}_dw"),
                    cin,
                    cin,
                    ConvSpec::new(3, stride, 1, cin),
                    false,
                )
                .bn(&format!("{p}_dw_bn"), cin)
                .act(&format!("{p}_dw_relu"), relu6())
                .conv(
                    &format!("{p}_pw"),
                    cin,
                    cout,
                    ConvSpec::new(1, 1, 0, 1),
                    false,
                )
                .bn(&format!("{p}_pw_bn"), cout)
                .act(&format!("{p}_pw_relu"), relu6());
            }
            b.act("gap", Op::GlobalAvgPool)
                .act("flatten", Op::Flatten { axis: 1 })
                .dense("fc", 128, 10);
        }
    }
    b.finish()
}

/// Trains `arch` from seed `seed` on `full` (a fixed 1/12 of it, chosen by the seed, is held out
/// for validation) with `cfg`. This is exactly what `lithe train --arch A --seed S` runs to
/// produce the committed zoo models.
pub fn train_arch(
    arch: Arch,
    seed: u64,
    full: &crate::data::Dataset,
    cfg: &TrainConfig,
    on_progress: &mut dyn FnMut(&crate::train::Progress) -> std::ops::ControlFlow<()>,
) -> Result<(Graph, crate::train::TrainSummary)> {
    let (train_set, val) = full.split(full.len() / 12, seed);
    let mut g = build(arch, seed)?;
    let summary = crate::train::train(&mut g, &train_set, Some(&val), cfg, on_progress)?;
    Ok((g, summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures_have_the_documented_sizes() {
        let params = |a| build(a, 1).unwrap().param_count();
        assert_eq!(
            params(Arch::Lenet300100),
            784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
        );
        assert_eq!(params(Arch::Lenet5), 520 + 25_050 + 400_500 + 5_010);
        assert_eq!(params(Arch::TinyMlp), 784 * 32 + 32 + 32 * 10 + 10);
        for a in Arch::ALL {
            let g = build(a, 3).unwrap();
            let s = g.infer_shapes(2).unwrap();
            assert_eq!(s["logits"], vec![2, 10], "{a:?}");
            assert_eq!(Arch::from_name(a.name()).unwrap(), a);
        }
        assert_eq!(
            build(Arch::Lenet5, 9).unwrap(),
            build(Arch::Lenet5, 9).unwrap()
        );
        assert!(Arch::from_name("resnet").is_err());
    }
}

//! Hand-computed forwards and finite-difference gradient checks for every op.

use super::*;
use crate::graph::{AutoPad, ConvAttrs, GemmAttrs, PadAttrs, PadMode, PoolAttrs};
use crate::tensor::from_vec;

fn node(op: Op, n: usize) -> Node {
    let ins: Vec<String> = (0..n).map(|i| format!("i{i}")).collect();
    Node {
        name: "n".into(),
        op,
        inputs: ins,
        outputs: vec!["y".into()],
    }
}

fn fwd(op: Op, ins: &[&Tensor]) -> Tensor {
    let n = node(op, ins.len());
    let opts: Vec<Option<&Tensor>> = ins.iter().map(|t| Some(*t)).collect();
    let shapes: Vec<Option<&[usize]>> = ins.iter().map(|t| Some(t.shape())).collect();
    let y = forward(&n, &opts, Mode::Eval).unwrap().0.remove(0);
    assert_eq!(
        infer_shape(&n, &shapes).unwrap()[0],
        y.shape(),
        "shape inference agrees with forward"
    );
    y
}

fn t(shape: &[usize], v: &[f32]) -> Tensor {
    from_vec(shape, v.to_vec()).unwrap()
}

fn close(a: &Tensor, b: &[f32]) {
    let a: Vec<f32> = a.iter().copied().collect();
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
    }
}

fn rand(shape: &[usize], seed: u64) -> Tensor {
    let mut r = Rng::new(seed);
    let n: usize = shape.iter().product();
    from_vec(shape, (0..n).map(|_| r.normal()).collect()).unwrap()
}

#[test]
fn gemm_matmul_by_hand() {
    let a = t(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let b = t(&[3, 2], &[1., 0., 0., 1., 1., 1.]);
    let c = t(&[2], &[10., 20.]);
    close(
        &fwd(Op::Gemm(GemmAttrs::default()), &[&a, &b, &c]),
        &[14., 25., 20., 31.],
    );
    let bt = t(&[2, 3], &[1., 0., 1., 0., 1., 1.]);
    let g = GemmAttrs {
        alpha: 2.0,
        beta: 0.5,
        trans_b: true,
        ..GemmAttrs::default()
    };
    close(&fwd(Op::Gemm(g), &[&a, &bt, &c]), &[13., 20., 25., 32.]);
    close(&fwd(Op::MatMul, &[&a, &b]), &[4., 5., 10., 11.]);
    let a3 = t(&[2, 1, 3], &[1., 2., 3., 4., 5., 6.]);
    close(&fwd(Op::MatMul, &[&a3, &b]), &[4., 5., 10., 11.]);
    let v = t(&[3], &[1., 1., 1.]);
    close(&fwd(Op::MatMul, &[&a, &v]), &[6., 15.]);
    let n = node(Op::MatMul, 2);
    let e = infer_shape(&n, &[Some(&[2, 3]), Some(&[2, 2])]).unwrap_err();
    assert!(e.to_string().contains("[2, 3] vs [2, 2]"), "{e}");
}

#[test]
fn conv_by_hand() {
    // 1×1×3×3 input, 2×2 kernel of ones → sums of 2×2 windows.
    let x = t(&[1, 1, 3, 3], &[1., 2., 3., 4., 5., 6., 7., 8., 9.]);
    let w = t(&[1, 1, 2, 2], &[1., 1., 1., 1.]);
    let b = t(&[1], &[1.]);
    close(
        &fwd(Op::Conv(ConvAttrs::new([2, 2])), &[&x, &w, &b]),
        &[13., 17., 25., 29.],
    );
    // Padding 1, stride 2: corners of the padded image.
    let a = ConvAttrs {
        strides: [2, 2],
        pads: [1, 1, 1, 1],
        ..ConvAttrs::new([2, 2])
    };
    close(&fwd(Op::Conv(a), &[&x, &w]), &[1., 5., 11., 28.]);
    // Dilation 2 with a 2×2 kernel picks the four corners.
    let a = ConvAttrs {
        dilations: [2, 2],
        ..ConvAttrs::new([2, 2])
    };
    close(&fwd(Op::Conv(a), &[&x, &w]), &[20.]);
    // Depthwise: 2 channels, each scaled by its own 1×1 weight.
    let x2 = t(&[1, 2, 1, 2], &[1., 2., 3., 4.]);
    let w2 = t(&[2, 1, 1, 1], &[10., -1.]);
    let a = ConvAttrs {
        groups: 2,
        ..ConvAttrs::new([1, 1])
    };
    close(&fwd(Op::Conv(a), &[&x2, &w2]), &[10., 20., -3., -4.]);
    // SAME_UPPER keeps the size.
    let a = ConvAttrs {
        auto_pad: AutoPad::SameUpper,
        ..ConvAttrs::new([2, 2])
    };
    assert_eq!(fwd(Op::Conv(a), &[&x, &w]).shape(), &[1, 1, 3, 3]);
    let n = node(
        Op::Conv(ConvAttrs {
            groups: 3,
            ..ConvAttrs::new([2, 2])
        }),
        2,
    );
    let e = infer_shape(&n, &[Some(&[1, 2, 3, 3]), Some(&[1, 1, 2, 2])]).unwrap_err();
    assert!(e.to_string().contains("group=3"), "{e}");
}

#[test]
fn pooling_by_hand() {
    let x = t(
        &[1, 1, 4, 4],
        &(1..=16).map(|v| v as f32).collect::<Vec<_>>(),
    );
    close(
        &fwd(Op::MaxPool(PoolAttrs::square(2)), &[&x]),
        &[6., 8., 14., 16.],
    );
    close(
        &fwd(Op::AvgPool(PoolAttrs::square(2)), &[&x]),
        &[3.5, 5.5, 11.5, 13.5],
    );
    close(&fwd(Op::GlobalAvgPool, &[&x]), &[8.5]);
    let x3 = t(&[1, 1, 3, 3], &[1., 2., 3., 4., 5., 6., 7., 8., 9.]);
    let ceil = PoolAttrs {
        ceil_mode: true,
        ..PoolAttrs::square(2)
    };
    close(&fwd(Op::MaxPool(ceil.clone()), &[&x3]), &[5., 6., 8., 9.]);
    close(&fwd(Op::AvgPool(ceil), &[&x3]), &[3., 4.5, 7.5, 9.]);
    let pad = PoolAttrs {
        pads: [1, 1, 1, 1],
        strides: [2, 2],
        kernel: [2, 2],
        ..PoolAttrs::square(2)
    };
    close(&fwd(Op::AvgPool(pad.clone()), &[&x3]), &[1., 2.5, 5.5, 7.]);
    let incl = PoolAttrs {
        count_include_pad: true,
        ..pad
    };
    close(&fwd(Op::AvgPool(incl), &[&x3]), &[0.25, 1.25, 2.75, 7.]);
}

#[test]
fn norm_and_activations_by_hand() {
    let x = t(&[1, 2, 1, 2], &[1., 3., -1., 1.]);
    let (s, b) = (t(&[2], &[2., 1.]), t(&[2], &[0., 1.]));
    let (m, v) = (t(&[2], &[1., 0.]), t(&[2], &[4., 1.]));
    let bn = Op::BatchNorm {
        epsilon: 0.0,
        momentum: 0.9,
    };
    close(&fwd(bn, &[&x, &s, &b, &m, &v]), &[0., 2., 0., 2.]);
    let a = t(&[4], &[-2., -0.5, 0.5, 8.]);
    close(&fwd(Op::Relu, &[&a]), &[0., 0., 0.5, 8.]);
    close(
        &fwd(Op::Clip { min: 0., max: 6. }, &[&a]),
        &[0., 0., 0.5, 6.],
    );
    close(&fwd(Op::Sigmoid, &[&t(&[2], &[0., 100.])]), &[0.5, 1.]);
    close(&fwd(Op::Tanh, &[&t(&[1], &[0.])]), &[0.]);
    let l = t(&[1, 2], &[0., 2f32.ln()]);
    close(
        &fwd(
            Op::Softmax {
                axis: -1,
                coerce_2d: false,
            },
            &[&l],
        ),
        &[1. / 3., 2. / 3.],
    );
    close(
        &fwd(
            Op::LogSoftmax {
                axis: 1,
                coerce_2d: false,
            },
            &[&l],
        ),
        &[-(3f32.ln()), (2f32 / 3.).ln()],
    );
    let x4 = t(&[1, 2, 1, 1], &[0., 0.]);
    close(
        &fwd(
            Op::Softmax {
                axis: 1,
                coerce_2d: true,
            },
            &[&x4],
        ),
        &[0.5, 0.5],
    );
    close(
        &fwd(Op::Dropout { ratio: 0.5 }, &[&a]),
        &[-2., -0.5, 0.5, 8.],
    );
}

#[test]
fn shape_ops_by_hand() {
    let x = rand(&[2, 3, 4], 1);
    assert_eq!(fwd(Op::Flatten { axis: 1 }, &[&x]).shape(), &[2, 12]);
    assert_eq!(fwd(Op::Flatten { axis: 0 }, &[&x]).shape(), &[1, 24]);
    assert_eq!(
        fwd(Op::Reshape { shape: vec![0, -1] }, &[&x]).shape(),
        &[2, 12]
    );
    assert_eq!(
        fwd(
            Op::Reshape {
                shape: vec![4, 3, 2]
            },
            &[&x]
        )
        .shape(),
        &[4, 3, 2]
    );
    let n = node(Op::Reshape { shape: vec![5, -1] }, 1);
    assert!(infer_shape(&n, &[Some(&[2, 3, 4])]).is_err());
    let a = t(&[2, 2], &[1., 2., 3., 4.]);
    let b = t(&[2], &[10., 20.]);
    close(&fwd(Op::Add, &[&a, &b]), &[11., 22., 13., 24.]);
    close(
        &fwd(Op::Concat { axis: 1 }, &[&a, &a]),
        &[1., 2., 1., 2., 3., 4., 3., 4.],
    );
    close(
        &fwd(Op::Concat { axis: 0 }, &[&a, &t(&[1, 2], &[5., 6.])]),
        &[1., 2., 3., 4., 5., 6.],
    );
    let n = node(Op::Add, 2);
    assert!(infer_shape(&n, &[Some(&[2, 3]), Some(&[2])]).is_err());
}

/// Compares the analytic gradient of `sum(y · r)` with central differences for inputs `check`.
fn grad_check(op: Op, ins: Vec<Tensor>, check: &[usize], train: bool, tol: f32) {
    let n = node(op, ins.len());
    let run = |ins: &[Tensor]| -> (Tensor, Saved) {
        let opts: Vec<Option<&Tensor>> = ins.iter().map(Some).collect();
        let mut rng = Rng::new(5);
        let mode = if train {
            Mode::Train(&mut rng)
        } else {
            Mode::Eval
        };
        let (mut y, s) = forward(&n, &opts, mode).unwrap();
        (y.remove(0), s)
    };
    let (y, saved) = run(&ins);
    let r = rand(y.shape(), 99);
    let opts: Vec<Option<&Tensor>> = ins.iter().map(Some).collect();
    let grads = backward(&n, &opts, &y, &saved, &r).unwrap();
    let eps = 1e-2f32;
    for &i in check {
        let g = grads[i].as_ref().expect("gradient present");
        assert_eq!(g.shape(), ins[i].shape());
        for k in 0..ins[i].len() {
            let mut p = ins.clone();
            p[i].as_slice_mut().unwrap()[k] += eps;
            let mut m = ins.clone();
            m[i].as_slice_mut().unwrap()[k] -= eps;
            let fp: f32 = (&run(&p).0 * &r).sum();
            let fm: f32 = (&run(&m).0 * &r).sum();
            let fd = (fp - fm) / (2.0 * eps);
            let an = g.as_slice().unwrap()[k];
            assert!(
                (fd - an).abs() <= tol * (1.0 + fd.abs().max(an.abs())),
                "{:?} input {i}[{k}]: fd {fd} vs analytic {an}",
                n.op
            );
        }
    }
}

#[test]
fn gradients_dense() {
    grad_check(
        Op::Gemm(GemmAttrs::default()),
        vec![rand(&[3, 4], 1), rand(&[4, 5], 2), rand(&[5], 3)],
        &[0, 1, 2],
        false,
        1e-2,
    );
    let g = GemmAttrs {
        alpha: 0.5,
        beta: 2.0,
        trans_a: true,
        trans_b: true,
    };
    grad_check(
        Op::Gemm(g),
        vec![rand(&[4, 3], 1), rand(&[5, 4], 2), rand(&[1, 5], 3)],
        &[0, 1, 2],
        false,
        1e-2,
    );
    grad_check(
        Op::MatMul,
        vec![rand(&[2, 3, 4], 1), rand(&[4, 2], 2)],
        &[0, 1],
        false,
        1e-2,
    );
    grad_check(
        Op::MatMul,
        vec![rand(&[2, 3, 4], 1), rand(&[2, 4, 2], 2)],
        &[0, 1],
        false,
        1e-2,
    );
    grad_check(
        Op::MatMul,
        vec![rand(&[4], 1), rand(&[4, 2], 2)],
        &[0, 1],
        false,
        1e-2,
    );
}

#[test]
fn gradients_conv() {
    let a = ConvAttrs {
        strides: [2, 1],
        pads: [1, 0, 1, 2],
        dilations: [1, 2],
        ..ConvAttrs::new([3, 2])
    };
    grad_check(
        Op::Conv(a),
        vec![
            rand(&[2, 3, 5, 6], 1),
            rand(&[4, 3, 3, 2], 2),
            rand(&[4], 3),
        ],
        &[0, 1, 2],
        false,
        2e-2,
    );
    let dw = ConvAttrs {
        groups: 4,
        pads: [1; 4],
        ..ConvAttrs::new([3, 3])
    };
    grad_check(
        Op::Conv(dw),
        vec![rand(&[1, 4, 4, 4], 4), rand(&[8, 1, 3, 3], 5)],
        &[0, 1],
        false,
        2e-2,
    );
}

#[test]
fn gradients_pool_norm_activations() {
    let x = rand(&[2, 2, 5, 5], 7);
    grad_check(
        Op::MaxPool(PoolAttrs {
            strides: [2, 2],
            kernel: [3, 3],
            pads: [1; 4],
            ..PoolAttrs::square(3)
        }),
        vec![x.clone()],
        &[0],
        false,
        2e-2,
    );
    grad_check(
        Op::AvgPool(PoolAttrs {
            ceil_mode: true,
            ..PoolAttrs::square(2)
        }),
        vec![x.clone()],
        &[0],
        false,
        1e-2,
    );
    grad_check(Op::GlobalAvgPool, vec![x.clone()], &[0], false, 1e-2);
    let c = |s| rand(&[2], s);
    let var = t(&[2], &[0.5, 2.0]);
    grad_check(
        Op::BatchNorm {
            epsilon: 1e-5,
            momentum: 0.9,
        },
        vec![x.clone(), c(1), c(2), c(3), var.clone()],
        &[0, 1, 2],
        false,
        1e-2,
    );
    grad_check(
        Op::BatchNorm {
            epsilon: 1e-5,
            momentum: 0.9,
        },
        vec![x.clone(), c(1), c(2), c(3), var],
        &[0, 1, 2],
        true,
        3e-2,
    );
    let a = rand(&[3, 4], 8).mapv(|v| if v.abs() < 0.05 { 0.3 } else { v * 2.0 });
    grad_check(Op::Relu, vec![a.clone()], &[0], false, 1e-2);
    grad_check(
        Op::Clip {
            min: -1.0,
            max: 1.5,
        },
        vec![a.clone()],
        &[0],
        false,
        1e-2,
    );
    grad_check(Op::Sigmoid, vec![a.clone()], &[0], false, 1e-2);
    grad_check(Op::Tanh, vec![a.clone()], &[0], false, 1e-2);
    grad_check(
        Op::Softmax {
            axis: 1,
            coerce_2d: false,
        },
        vec![a.clone()],
        &[0],
        false,
        1e-2,
    );
    grad_check(
        Op::LogSoftmax {
            axis: -1,
            coerce_2d: false,
        },
        vec![a.clone()],
        &[0],
        false,
        1e-2,
    );
    grad_check(
        Op::Softmax {
            axis: 1,
            coerce_2d: true,
        },
        vec![rand(&[2, 3, 2], 4)],
        &[0],
        false,
        1e-2,
    );
    grad_check(Op::Flatten { axis: 1 }, vec![x.clone()], &[0], false, 1e-2);
    grad_check(
        Op::Reshape {
            shape: vec![-1, 10],
        },
        vec![x.clone()],
        &[0],
        false,
        1e-2,
    );
    grad_check(
        Op::Add,
        vec![rand(&[2, 3], 1), rand(&[3], 2)],
        &[0, 1],
        false,
        1e-2,
    );
    grad_check(
        Op::Concat { axis: 1 },
        vec![rand(&[2, 3], 1), rand(&[2, 1], 2)],
        &[0, 1],
        false,
        1e-2,
    );
    grad_check(Op::Dropout { ratio: 0.3 }, vec![a], &[0], true, 1e-2);
}

#[test]
fn new_activations_by_hand() {
    let a = t(&[4], &[-2., -0.5, 0.5, 8.]);
    close(
        &fwd(Op::LeakyRelu { alpha: 0.1 }, &[&a]),
        &[-0.2, -0.05, 0.5, 8.],
    );
    let h = t(&[4], &[-5., 0., 1., 5.]);
    close(
        &fwd(
            Op::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
            &[&h],
        ),
        &[0., 0.5, 0.7, 1.],
    );
    let s = t(&[5], &[-4., -1., 0., 1., 4.]);
    close(&fwd(Op::HardSwish, &[&s]), &[0., -1. / 3., 0., 2. / 3., 4.]);
    let g = t(&[4], &[-1., 0., 1., 2.]);
    close(
        &fwd(Op::Gelu { tanh: false }, &[&g]),
        &[-0.158_655_25, 0., 0.841_344_8, 1.954_499_7],
    );
    close(
        &fwd(Op::Gelu { tanh: true }, &[&g]),
        &[-0.158_808, 0., 0.841_192, 1.954_597_7],
    );
}

#[test]
fn binary_ops_by_hand() {
    let a = t(&[2, 2], &[1., 2., 3., 4.]);
    let b = t(&[2], &[10., 20.]);
    close(&fwd(Op::Mul, &[&a, &b]), &[10., 40., 30., 80.]);
    close(&fwd(Op::Sub, &[&a, &b]), &[-9., -18., -7., -16.]);
    close(&fwd(Op::Sub, &[&b, &a]), &[9., 18., 7., 16.]);
    close(&fwd(Op::Div, &[&a, &b]), &[0.1, 0.1, 0.3, 0.2]);
    // Both sides broadcast: [2, 1] ∘ [1, 3] → [2, 3].
    let c = t(&[2, 1], &[1., 2.]);
    let d = t(&[1, 3], &[1., 2., 4.]);
    close(&fwd(Op::Div, &[&c, &d]), &[1., 0.5, 0.25, 2., 1., 0.5]);
    // IEEE division by zero.
    let y = fwd(Op::Div, &[&t(&[3], &[1., -1., 0.]), &t(&[1], &[0.])]);
    let y: Vec<f32> = y.iter().copied().collect();
    assert_eq!(y[0], f32::INFINITY);
    assert_eq!(y[1], f32::NEG_INFINITY);
    assert!(y[2].is_nan());
    let n = node(Op::Mul, 2);
    let e = infer_shape(&n, &[Some(&[2, 3]), Some(&[2])]).unwrap_err();
    assert!(e.to_string().contains("Mul"), "{e}");
}

#[test]
fn new_shape_ops_by_hand() {
    let a = t(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let tr = fwd(Op::Transpose { perm: vec![1, 0] }, &[&a]);
    assert_eq!(tr.shape(), &[3, 2]);
    close(&tr, &[1., 4., 2., 5., 3., 6.]);
    let x = rand(&[2, 3, 4], 3);
    let y = fwd(Op::Transpose { perm: vec![] }, &[&x]);
    assert_eq!(y.shape(), &[4, 3, 2]);
    assert_eq!(y[[3, 1, 0]], x[[0, 1, 3]]);
    let y = fwd(
        Op::Transpose {
            perm: vec![1, 2, 0],
        },
        &[&x],
    );
    assert_eq!(y.shape(), &[3, 4, 2]);
    assert_eq!(y[[2, 3, 1]], x[[1, 2, 3]]);
    let n = node(Op::Transpose { perm: vec![0, 0] }, 1);
    let e = infer_shape(&n, &[Some(&[2, 2])]).unwrap_err();
    assert!(matches!(e, Error::Attribute { attr: "perm", .. }), "{e}");
    let n = node(Op::Transpose { perm: vec![1, 0] }, 1);
    assert!(infer_shape(&n, &[Some(&[2, 2, 2])]).is_err());

    let s = rand(&[1, 3, 1], 4);
    assert_eq!(fwd(Op::Squeeze { axes: vec![] }, &[&s]).shape(), &[3]);
    assert_eq!(fwd(Op::Squeeze { axes: vec![-1] }, &[&s]).shape(), &[1, 3]);
    let n = node(Op::Squeeze { axes: vec![1] }, 1);
    assert!(matches!(
        infer_shape(&n, &[Some(&[1, 3, 1])]),
        Err(Error::Shape { .. })
    ));
    let n = node(Op::Squeeze { axes: vec![5] }, 1);
    assert!(matches!(
        infer_shape(&n, &[Some(&[1, 3, 1])]),
        Err(Error::Attribute { .. })
    ));
    let v = t(&[3], &[1., 2., 3.]);
    let u = fwd(Op::Unsqueeze { axes: vec![0, -1] }, &[&v]);
    assert_eq!(u.shape(), &[1, 3, 1]);
    close(&u, &[1., 2., 3.]);
    let n = node(Op::Unsqueeze { axes: vec![0, 0] }, 1);
    assert!(infer_shape(&n, &[Some(&[3])]).is_err());
    let n = node(Op::Unsqueeze { axes: vec![0; 8] }, 1);
    assert!(infer_shape(&n, &[Some(&[3, 3])]).is_err());

    let p = t(&[1, 2, 2, 2], &[1., 5., 3., 2., -1., -4., -3., -2.]);
    let m = fwd(Op::GlobalMaxPool, &[&p]);
    assert_eq!(m.shape(), &[1, 2, 1, 1]);
    close(&m, &[5., -1.]);
}

fn pad_op(pads: &[usize], mode: PadMode, value: f32) -> Op {
    Op::Pad(PadAttrs {
        pads: pads.to_vec(),
        axes: vec![],
        mode,
        value,
    })
}

#[test]
fn pad_by_hand() {
    let x = t(&[1, 1, 2, 2], &[1., 2., 3., 4.]);
    let y = fwd(
        pad_op(&[0, 0, 1, 0, 0, 0, 0, 1], PadMode::Constant, 9.),
        &[&x],
    );
    assert_eq!(y.shape(), &[1, 1, 3, 3]);
    close(&y, &[9., 9., 9., 1., 2., 9., 3., 4., 9.]);
    let v = t(&[3], &[1., 2., 3.]);
    close(
        &fwd(pad_op(&[2, 2], PadMode::Reflect, 0.), &[&v]),
        &[3., 2., 1., 2., 3., 2., 1.],
    );
    // Reflection past the far edge folds back again, as NumPy does.
    close(
        &fwd(pad_op(&[0, 5], PadMode::Reflect, 0.), &[&v]),
        &[1., 2., 3., 2., 1., 2., 3., 2.],
    );
    close(
        &fwd(pad_op(&[1, 2], PadMode::Edge, 0.), &[&v]),
        &[1., 1., 2., 3., 3., 3.],
    );
    close(
        &fwd(pad_op(&[1, 4], PadMode::Wrap, 0.), &[&v]),
        &[3., 1., 2., 3., 1., 2., 3., 1.],
    );
    // Only the last axis, through `axes`.
    let a = Op::Pad(PadAttrs {
        pads: vec![1, 0],
        axes: vec![-1],
        mode: PadMode::Constant,
        value: 0.,
    });
    let y = fwd(a, &[&x]);
    assert_eq!(y.shape(), &[1, 1, 2, 3]);
    close(&y, &[0., 1., 2., 0., 3., 4.]);
    let n = node(pad_op(&[1, 1], PadMode::Constant, 0.), 1);
    let e = infer_shape(&n, &[Some(&[2, 2])]).unwrap_err();
    assert!(matches!(e, Error::Attribute { attr: "pads", .. }), "{e}");
    let n = node(pad_op(&[1 << 15; 4], PadMode::Constant, 0.), 1);
    assert!(matches!(
        infer_shape(&n, &[Some(&[1 << 10, 1 << 10])]).unwrap_err(),
        Error::Limit { .. }
    ));
}

#[test]
fn layer_norm_by_hand() {
    let x = t(&[2, 3], &[1., 2., 3., 0., 0., 3.]);
    let scale = t(&[3], &[1., 2., 1.]);
    let bias = t(&[3], &[0., 0., 1.]);
    let n = node(
        Op::LayerNorm {
            axis: -1,
            epsilon: 0.,
        },
        3,
    );
    let (outs, _) = forward(&n, &[Some(&x), Some(&scale), Some(&bias)], Mode::Eval).unwrap();
    let r = 1.5f32.sqrt();
    let q = 0.5f32.sqrt();
    close(&outs[0], &[-r, 0., r + 1., -q, -2. * q, 2. * q + 1.]);
    assert_eq!(outs[1].shape(), &[2, 1]);
    close(&outs[1], &[2., 1.]);
    close(&outs[2], &[r, q]);
    let shapes = infer_shape(&n, &[Some(&[2, 3]), Some(&[3]), Some(&[3])]).unwrap();
    assert_eq!(shapes, vec![vec![2, 3], vec![2, 1], vec![2, 1]]);
    let e = infer_shape(&n, &[Some(&[2, 3]), Some(&[2]), None]).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    // Without bias, axis 1 of a 3-D input normalises the last two dims together.
    let x3 = rand(&[2, 2, 3], 4);
    let ones = t(&[2, 3], &[1.; 6]);
    let y = fwd(
        Op::LayerNorm {
            axis: 1,
            epsilon: 1e-5,
        },
        &[&x3, &ones],
    );
    for row in y.as_slice().unwrap().chunks(6) {
        let m: f32 = row.iter().sum::<f32>() / 6.;
        let v: f32 = row.iter().map(|z| (z - m) * (z - m)).sum::<f32>() / 6.;
        assert!(m.abs() < 1e-5 && (v - 1.).abs() < 1e-3, "{m} {v}");
    }
}

#[test]
fn gradients_new_ops() {
    let a = rand(&[3, 4], 8).mapv(|v| if v.abs() < 0.05 { 0.3 } else { v * 2.0 });
    grad_check(
        Op::LeakyRelu { alpha: 0.1 },
        vec![a.clone()],
        &[0],
        false,
        1e-2,
    );
    let away = |v: f32, k: f32| {
        if (v.abs() - k).abs() < 0.05 {
            v + 0.1
        } else {
            v
        }
    };
    let h = rand(&[3, 4], 9).mapv(|v| away(v * 3.0, 2.5));
    grad_check(
        Op::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        },
        vec![h],
        &[0],
        false,
        1e-2,
    );
    let s = rand(&[3, 4], 10).mapv(|v| away(v * 3.0, 3.0));
    grad_check(Op::HardSwish, vec![s], &[0], false, 1e-2);
    grad_check(Op::Gelu { tanh: false }, vec![a.clone()], &[0], false, 1e-2);
    grad_check(Op::Gelu { tanh: true }, vec![a.clone()], &[0], false, 1e-2);
    for op in [Op::Sub, Op::Mul] {
        grad_check(
            op,
            vec![rand(&[2, 3], 1), rand(&[3], 2)],
            &[0, 1],
            false,
            1e-2,
        );
    }
    let den = rand(&[2, 1], 3).mapv(|v| v.signum() * (v.abs() + 1.0));
    grad_check(Op::Div, vec![rand(&[2, 3], 1), den], &[0, 1], false, 1e-2);
    let x = rand(&[2, 3, 4], 5);
    grad_check(
        Op::Transpose {
            perm: vec![2, 0, 1],
        },
        vec![x.clone()],
        &[0],
        false,
        1e-2,
    );
    grad_check(
        Op::Unsqueeze { axes: vec![1] },
        vec![x.clone()],
        &[0],
        false,
        1e-2,
    );
    grad_check(
        Op::Squeeze { axes: vec![] },
        vec![rand(&[2, 1, 3], 6)],
        &[0],
        false,
        1e-2,
    );
    grad_check(
        Op::GlobalMaxPool,
        vec![rand(&[2, 2, 3, 3], 7)],
        &[0],
        false,
        1e-2,
    );
    for mode in [
        PadMode::Constant,
        PadMode::Reflect,
        PadMode::Edge,
        PadMode::Wrap,
    ] {
        grad_check(
            pad_op(&[0, 1, 2, 0, 2, 1], mode, 0.5),
            vec![rand(&[2, 3, 3], 8)],
            &[0],
            false,
            1e-2,
        );
    }
    grad_check(
        Op::LayerNorm {
            axis: -1,
            epsilon: 1e-5,
        },
        vec![rand(&[3, 4], 1), rand(&[4], 2), rand(&[4], 3)],
        &[0, 1, 2],
        false,
        2e-2,
    );
    grad_check(
        Op::LayerNorm {
            axis: 1,
            epsilon: 1e-5,
        },
        vec![rand(&[2, 2, 3], 4), rand(&[1, 3], 5)],
        &[0, 1],
        false,
        2e-2,
    );
}

#[test]
fn sign_and_round_forward_and_straight_through_backward() {
    let x = t(&[7], &[-2.5, -1.0, -0.5, 0.0, 0.5, 1.5, 2.5]);
    close(&fwd(Op::Sign, &[&x]), &[-1., -1., -1., 0., 1., 1., 1.]);
    // Halves go to the even neighbour, as ONNX Round.
    close(&fwd(Op::Round, &[&x]), &[-2., -1., -0., 0., 0., 2., 2.]);
    let dy = t(&[7], &[1., 2., 3., 4., 5., 6., 7.]);
    let back = |op: Op| {
        let n = node(op, 1);
        let (y, saved) = forward(&n, &[Some(&x)], Mode::Eval).unwrap();
        backward(&n, &[Some(&x)], &y[0], &saved, &dy).unwrap()[0]
            .clone()
            .unwrap()
    };
    // Sign: the hardtanh straight-through estimator (gradient where |x| ≤ 1).
    close(&back(Op::Sign), &[0., 2., 3., 4., 5., 0., 0.]);
    // Round: identity.
    close(&back(Op::Round), &[1., 2., 3., 4., 5., 6., 7.]);
}

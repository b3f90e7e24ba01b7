//! Graph rewrites that keep outputs equal: batch-norm folding.

use super::{Graph, Op};
use crate::tensor::Tensor;
use crate::{Error, Result};
use ndarray::{Axis, IxDyn};

/// Folds every inference `BatchNormalization` that directly follows a `Conv` or `Gemm` (whose
/// output nothing else reads) into that layer's weight and bias, removing the BatchNorm node.
/// Returns how many were folded. Outputs are unchanged up to float rounding.
pub fn fold_batchnorm(g: &mut Graph) -> Result<usize> {
    let mut folded = 0;
    while let Some((pi, bi)) = find_pair(g) {
        fold_pair(g, pi, bi)?;
        folded += 1;
    }
    if folded > 0 {
        g.validate()?;
    }
    Ok(folded)
}

fn readers(g: &Graph, value: &str) -> usize {
    g.nodes
        .iter()
        .flat_map(|n| n.inputs.iter())
        .filter(|i| *i == value)
        .count()
        + g.outputs.iter().filter(|o| *o == value).count()
}

fn find_pair(g: &Graph) -> Option<(usize, usize)> {
    for (bi, bn) in g.nodes.iter().enumerate() {
        if !matches!(bn.op, Op::BatchNorm { .. })
            || bn.inputs.len() != 5
            || bn.outputs.len() != 1
            || !bn.inputs[1..].iter().all(|w| g.weights.contains_key(w))
        {
            continue;
        }
        // Four statistics of one length, one per channel.
        let c = g.weights[&bn.inputs[1]].len();
        if bn.inputs[1..]
            .iter()
            .any(|w| g.weights[w].ndim() != 1 || g.weights[w].len() != c)
        {
            continue;
        }
        let x = &bn.inputs[0];
        let Some(pi) = g.nodes.iter().position(|n| n.outputs.first() == Some(x)) else {
            continue;
        };
        let p = &g.nodes[pi];
        let weight_ok = p
            .inputs
            .get(1)
            .is_some_and(|w| g.weights.contains_key(w) && readers(g, w) == 1);
        let bias_ok = p
            .inputs
            .get(2)
            .is_none_or(|b| b.is_empty() || (g.weights.contains_key(b) && readers(g, b) == 1));
        // The weight's output-channel axis must hold `c` channels, a bias `c` values.
        let channels = |axis: usize| {
            p.inputs
                .get(1)
                .and_then(|w| g.weights.get(w))
                .is_some_and(|w| w.ndim() > axis && w.shape()[axis] == c)
        };
        let op_ok = match &p.op {
            Op::Conv(_) => channels(0),
            Op::Gemm(a) => !a.trans_a && channels(if a.trans_b { 0 } else { 1 }),
            _ => false,
        } && p.outputs.len() == 1
            && p.inputs
                .get(2)
                .filter(|b| !b.is_empty())
                .and_then(|b| g.weights.get(b))
                .is_none_or(|b| b.broadcast(IxDyn(&[c])).is_some());
        if op_ok && weight_ok && bias_ok && readers(g, x) == 1 {
            return Some((pi, bi));
        }
    }
    None
}

fn fold_pair(g: &mut Graph, pi: usize, bi: usize) -> Result<()> {
    let bn = g.nodes[bi].clone();
    let Op::BatchNorm { epsilon, .. } = bn.op else {
        return Err(Error::Graph("not a BatchNorm".into()));
    };
    let w = |k: usize| {
        g.weights[&bn.inputs[k]]
            .iter()
            .copied()
            .collect::<Vec<f32>>()
    };
    let (s, beta, m, v) = (w(1), w(2), w(3), w(4));
    let k: Vec<f32> = s
        .iter()
        .zip(&v)
        .map(|(s, v)| s / (v + epsilon).sqrt())
        .collect();
    let c = k.len();
    let p = g.nodes[pi].clone();
    let wname = p.inputs[1].clone();
    let mut weight = g.weights[&wname].clone();
    // Output channel axis of the weight.
    let (axis, gemm_beta) = match &p.op {
        Op::Conv(_) => (0, 1.0),
        Op::Gemm(a) => (if a.trans_b { 0 } else { 1 }, a.beta),
        _ => return Err(Error::Graph("fold target is not Conv or Gemm".into())),
    };
    if weight.ndim() <= axis || weight.shape()[axis] != c {
        return Err(Error::shape(
            &bn.name,
            "BatchNormalization",
            "channel count differs from the producing layer",
            &[weight.shape(), &[c]],
        ));
    }
    for (i, mut lane) in weight.axis_iter_mut(Axis(axis)).enumerate() {
        lane.mapv_inplace(|x| x * k[i]);
    }
    let old_bias: Vec<f32> = match p.inputs.get(2).filter(|b| !b.is_empty()) {
        Some(b) => {
            let t = &g.weights[b];
            let t = t
                .broadcast(IxDyn(&[c]))
                .ok_or_else(|| Error::Graph(format!("bias of `{}` is not per-channel", p.name)))?;
            t.iter().map(|x| x * gemm_beta).collect()
        }
        None => vec![0.0; c],
    };
    let bias: Vec<f32> = (0..c)
        .map(|i| (old_bias[i] - m[i]) * k[i] + beta[i])
        .collect();
    let bname = match p.inputs.get(2).filter(|b| !b.is_empty()) {
        Some(b) => b.clone(),
        None => {
            // A fresh constant name (no weight or value has it).
            let taken = |n: &str| {
                g.weights.contains_key(n)
                    || g.nodes.iter().any(|x| x.outputs.iter().any(|o| o == n))
                    || g.inputs.iter().any(|i| i.name == n)
            };
            let mut name = format!("{}.bias", p.name);
            while taken(&name) {
                name.push('_');
            }
            name
        }
    };
    g.weights.insert(wname, weight);
    g.weights.insert(
        bname.clone(),
        Tensor::from_shape_vec(IxDyn(&[c]), bias).map_err(|e| Error::Invalid(e.to_string()))?,
    );
    let prod = &mut g.nodes[pi];
    if prod.inputs.len() < 3 {
        prod.inputs.resize(3, String::new());
    }
    prod.inputs[2] = bname;
    if let Op::Gemm(a) = &mut prod.op {
        a.beta = 1.0;
    }
    prod.outputs = bn.outputs.clone();
    g.nodes.remove(bi);
    for stat in &bn.inputs[1..] {
        if readers(g, stat) == 0 {
            g.weights.remove(stat);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::zoo::{Arch, build};

    #[test]
    fn folding_mobilenet_keeps_outputs() {
        let mut g = build(Arch::Mobilenet, 4).unwrap();
        // Non-trivial statistics so the fold has something to do.
        let mut r = Rng::new(8);
        for (name, w) in g.weights.iter_mut() {
            if name.ends_with(".mean") || name.ends_with(".bias") {
                w.mapv_inplace(|_| r.normal() * 0.1);
            } else if name.ends_with(".var") || name.ends_with(".scale") {
                w.mapv_inplace(|_| 0.5 + r.uniform());
            }
        }
        let x = crate::data::Dataset::synthetic(3, 2)
            .batch(&[0, 1, 2], &Default::default())
            .0;
        let before = crate::exec::run(&g, &[("input", &x)]).unwrap().remove(0);
        let bns = g
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::BatchNorm { .. }))
            .count();
        assert_eq!(fold_batchnorm(&mut g).unwrap(), bns);
        assert!(
            g.nodes
                .iter()
                .all(|n| !matches!(n.op, Op::BatchNorm { .. }))
        );
        let after = crate::exec::run(&g, &[("input", &x)]).unwrap().remove(0);
        let diff = (&before - &after)
            .mapv(f32::abs)
            .fold(0.0f32, |a, &b| a.max(b));
        assert!(diff < 1e-4, "max diff {diff}");
        assert_eq!(fold_batchnorm(&mut g).unwrap(), 0);
    }

    #[test]
    fn folding_into_gemm() {
        use crate::graph::{Dim, GemmAttrs, Node, ValueInfo};
        let mut g = Graph::default();
        g.inputs.push(ValueInfo {
            name: "x".into(),
            shape: vec![Dim::Sym("N".into()), Dim::Fixed(3)],
        });
        let t = |s: &[usize], v: Vec<f32>| crate::tensor::from_vec(s, v).unwrap();
        g.weights
            .insert("w".into(), t(&[3, 2], vec![1., 2., 3., 4., 5., 6.]));
        for (k, v) in [
            ("s", vec![2., 0.5]),
            ("b", vec![1., -1.]),
            ("m", vec![0.5, 1.]),
            ("v", vec![3., 0.25]),
        ] {
            g.weights.insert(k.into(), t(&[2], v));
        }
        g.nodes.push(Node::new(
            "fc",
            Op::Gemm(GemmAttrs {
                alpha: 2.0,
                ..GemmAttrs::default()
            }),
            &["x", "w"],
        ));
        g.nodes.push(Node::new(
            "bn",
            Op::BatchNorm {
                epsilon: 1e-5,
                momentum: 0.9,
            },
            &["fc", "s", "b", "m", "v"],
        ));
        g.outputs.push("bn".into());
        g.validate().unwrap();
        let x = t(&[2, 3], vec![1., -1., 2., 0.5, 0., -3.]);
        let before = crate::exec::run(&g, &[("x", &x)]).unwrap().remove(0);
        assert_eq!(fold_batchnorm(&mut g).unwrap(), 1);
        assert_eq!(g.nodes.len(), 1);
        let after = crate::exec::run(&g, &[("x", &x)]).unwrap().remove(0);
        assert!(
            (&before - &after).iter().all(|d| d.abs() < 1e-4),
            "{before} vs {after}"
        );
    }
}

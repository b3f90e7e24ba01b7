//! Measurements: accuracy and loss on a dataset, and per-layer parameters, bytes and MACs.

use crate::data::{Dataset, Preprocess};
use crate::graph::{Graph, Op};
use crate::tensor::DType;
use crate::train::loss::{argmax, cross_entropy};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Accuracy, loss, per-class accuracy and the confusion matrix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Images evaluated.
    pub count: usize,
    /// Fraction predicted correctly.
    pub accuracy: f32,
    /// Mean cross-entropy of the outputs taken as logits.
    pub loss: f32,
    /// Accuracy within each true class.
    pub per_class: Vec<f32>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<u32>>,
}

/// Evaluates with the preprocessing recorded in the graph metadata (default x/255).
pub fn evaluate(g: &Graph, data: &Dataset, batch: usize) -> Result<EvalReport> {
    let pre = Preprocess::from_metadata(&g.metadata).unwrap_or_default();
    evaluate_with(g, data, batch, &pre)
}

/// Evaluates `g` on `data` in batches of `batch` with an explicit preprocessing, through its
/// [`Plan`](crate::plan::Plan) (the kernels the page and the CLI run). A graph whose
/// input has a fixed batch (e.g. 1) is run with that batch size.
pub fn evaluate_with(
    g: &Graph,
    data: &Dataset,
    batch: usize,
    pre: &Preprocess,
) -> Result<EvalReport> {
    let input = g
        .inputs
        .first()
        .ok_or_else(|| Error::Graph("the graph has no input".into()))?;
    let batch = match input.shape.first() {
        Some(crate::graph::Dim::Fixed(n)) => *n,
        _ => batch.max(1),
    };
    let want: usize = input.concrete(1).iter().skip(1).product();
    if want != data.pixels() {
        return Err(Error::Input {
            name: input.name.clone(),
            detail: format!(
                "the model expects {:?} per image, the dataset has {}×{} pixels",
                &input.shape[1..],
                data.rows,
                data.cols
            ),
        });
    }
    let classes = data.classes;
    let mut confusion = vec![vec![0u32; classes]; classes];
    let mut loss_sum = 0.0f64;
    // The planned kernels (weights packed once for all batches), as the page and the CLI run
    // the model; they agree with the reference interpreter up to float rounding.
    let plan = crate::plan::Plan::new(g)?;
    for idx in data.batches(batch, None) {
        if idx.len() != batch && matches!(input.shape.first(), Some(crate::graph::Dim::Fixed(_))) {
            // Fixed-batch models: run the tail one image at a time.
            for i in idx {
                eval_batch(g, &plan, data, &[i], pre, &mut confusion, &mut loss_sum)?;
            }
            continue;
        }
        eval_batch(g, &plan, data, &idx, pre, &mut confusion, &mut loss_sum)?;
    }
    Ok(EvalReport::from_confusion(confusion, loss_sum, data.len()))
}

impl EvalReport {
    /// The report of `count` images from their confusion matrix (`confusion[true][predicted]`)
    /// and the sum of their cross-entropy losses.
    pub fn from_confusion(confusion: Vec<Vec<u32>>, loss_sum: f64, count: usize) -> EvalReport {
        let correct: u32 = (0..confusion.len())
            .filter_map(|i| confusion[i].get(i))
            .sum();
        let per_class = confusion
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let n: u32 = row.iter().sum();
                if n == 0 {
                    0.0
                } else {
                    row.get(i).copied().unwrap_or(0) as f32 / n as f32
                }
            })
            .collect();
        EvalReport {
            count,
            accuracy: if count == 0 {
                0.0
            } else {
                correct as f32 / count as f32
            },
            loss: if count == 0 {
                0.0
            } else {
                (loss_sum / count as f64) as f32
            },
            per_class,
            confusion,
        }
    }
}

fn eval_batch(
    g: &Graph,
    plan: &crate::plan::Plan,
    data: &Dataset,
    idx: &[usize],
    pre: &Preprocess,
    confusion: &mut [Vec<u32>],
    loss_sum: &mut f64,
) -> Result<()> {
    let input = &g.inputs[0];
    let (x, y) = data.batch(idx, pre);
    let mut shape = input.concrete(idx.len());
    shape[0] = idx.len();
    let x = x
        .into_shape_with_order(ndarray::IxDyn(&shape))
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let out = plan.run(&[(input.name.as_str(), &x)])?;
    let logits = crate::train::flatten_logits(
        out.first()
            .ok_or_else(|| Error::Graph("no output".into()))?,
    )?;
    let classes = logits.shape()[1];
    if classes < data.classes {
        return Err(Error::Invalid(format!(
            "the model has {classes} outputs but the dataset has {} classes",
            data.classes
        )));
    }
    let (loss, _, _) = cross_entropy(&logits, &y)?;
    *loss_sum += loss as f64 * y.len() as f64;
    let l = crate::tensor::to_contiguous(&logits);
    for (i, &t) in y.iter().enumerate() {
        let (p, _) = argmax(&l[i * classes..(i + 1) * classes]);
        if let Some(c) = confusion.get_mut(t as usize).and_then(|r| r.get_mut(p)) {
            *c += 1;
        }
    }
    Ok(())
}

/// One row of the layer table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// Node name.
    pub name: String,
    /// ONNX op type.
    pub op: String,
    /// Output shape at batch 1.
    pub shape: Vec<usize>,
    /// Weight elements owned by this node.
    pub params: usize,
    /// Bytes of those weights stored densely: 1 per int8/uint8 element (the constant weights of
    /// quantized ONNX models), 4 per f32 or int32 element.
    pub bytes: usize,
    /// Multiply-accumulates per image (integer ones included).
    pub macs: u64,
}

/// Summary of a model: layers, totals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Model name.
    pub name: String,
    /// Input name and shape (symbolic dims shown as 1... use `inputs` for detail).
    pub input_shape: Vec<usize>,
    /// One entry per node.
    pub layers: Vec<LayerInfo>,
    /// Total weight elements.
    pub params: usize,
    /// Total dense weight bytes (see [`LayerInfo::bytes`]).
    pub bytes: usize,
    /// Total multiply-accumulates per image.
    pub macs: u64,
}

/// Layer table and totals of `g` (shapes at batch 1).
pub fn model_info(g: &Graph) -> Result<ModelInfo> {
    let shapes = g.infer_shapes(1)?;
    let types = g.dtypes()?;
    let elem_bytes = |name: &str| match types.get(name) {
        Some(DType::I8 | DType::U8) => 1,
        _ => 4,
    };
    let mut layers = Vec::with_capacity(g.nodes.len());
    let mut seen = std::collections::HashSet::new();
    for n in &g.nodes {
        let owned: Vec<&String> = n
            .inputs
            .iter()
            .filter(|i| g.weights.contains_key(*i) && seen.insert(i.as_str()))
            .collect();
        let params: usize = owned.iter().map(|i| g.weights[*i].len()).sum();
        let bytes: usize = owned
            .iter()
            .map(|i| g.weights[*i].len() * elem_bytes(i))
            .sum();
        let out = shapes.get(&n.outputs[0]).cloned().unwrap_or_default();
        let in0 = n
            .inputs
            .first()
            .and_then(|i| shapes.get(i))
            .cloned()
            .unwrap_or_default();
        // The weight slot: 3 for QLinearConv/QLinearMatMul, 1 otherwise.
        let w_slot = match n.op {
            Op::QLinearConv { .. } | Op::QLinearMatMul { .. } => 3,
            _ => 1,
        };
        let w = n
            .inputs
            .get(w_slot)
            .and_then(|i| shapes.get(i))
            .cloned()
            .unwrap_or_default();
        let numel = |s: &[usize]| s.iter().product::<usize>() as u64;
        let macs = match &n.op {
            Op::Gemm(a) => {
                let k = if a.trans_a { in0.first() } else { in0.get(1) }
                    .copied()
                    .unwrap_or(0) as u64;
                numel(&out) * k
            }
            Op::MatMul | Op::MatMulInteger { .. } | Op::QLinearMatMul { .. } => {
                numel(&out) * in0.last().copied().unwrap_or(0) as u64
            }
            Op::Conv(_) | Op::ConvInteger { .. } | Op::QLinearConv { .. } => {
                numel(&out) * w.iter().skip(1).product::<usize>() as u64
            }
            _ => 0,
        };
        layers.push(LayerInfo {
            name: n.name.clone(),
            op: n.op.name().to_string(),
            shape: out,
            params,
            bytes,
            macs,
        });
    }
    Ok(ModelInfo {
        name: g.name.clone(),
        input_shape: g.inputs.first().map(|v| v.concrete(1)).unwrap_or_default(),
        params: layers.iter().map(|l| l.params).sum(),
        bytes: layers.iter().map(|l| l.bytes).sum(),
        macs: layers.iter().map(|l| l.macs).sum(),
        layers,
    })
}

//! The one façade the app, the CLI and the JS API call.

use crate::data::{Dataset, Preprocess};
use crate::graph::Graph;
use crate::metrics::{EvalReport, ModelInfo};
use crate::tensor::Tensor;
use crate::train::{Progress, TrainConfig, TrainSummary};
use crate::{Error, Result};
use std::ops::ControlFlow;
use std::sync::OnceLock;

/// A loaded model and how its inputs are prepared. Inference ([`Session::run`],
/// [`Session::classify`]) goes through an execution [`crate::plan::Plan`], built on first use
/// and rebuilt after training.
#[derive(Clone, Debug)]
pub struct Session {
    graph: Graph,
    preprocess: Preprocess,
    plan: OnceLock<crate::plan::Plan>,
}

impl Session {
    /// Wraps a graph (validated); preprocessing comes from its metadata, default x/255.
    pub fn from_graph(mut graph: Graph) -> Result<Self> {
        graph.validate()?;
        graph.infer_shapes(1)?;
        let preprocess = Preprocess::from_metadata(&graph.metadata).unwrap_or_default();
        Ok(Session {
            graph,
            preprocess,
            plan: OnceLock::new(),
        })
    }

    /// Imports an ONNX model from its bytes.
    pub fn from_onnx(bytes: &[u8]) -> Result<Self> {
        Self::from_graph(crate::format::onnx::import(bytes)?)
    }

    /// Imports a model from the bytes of an ONNX file or a `.lithe` container (recognised by
    /// its magic), so every front end opens both.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.starts_with(crate::format::lithe::MAGIC) {
            Self::from_graph(crate::format::lithe::decode(bytes)?)
        } else {
            Self::from_onnx(bytes)
        }
    }

    /// The model graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// How raw pixels are turned into inputs.
    pub fn preprocess(&self) -> Preprocess {
        self.preprocess
    }

    /// Changes the input preprocessing (recorded in the metadata so exports keep it).
    pub fn set_preprocess(&mut self, p: Preprocess) {
        self.preprocess = p;
        self.graph
            .metadata
            .insert("lithe.preprocess".into(), p.to_metadata());
    }

    /// The execution plan (built on first use).
    pub fn plan(&self) -> Result<&crate::plan::Plan> {
        if let Some(p) = self.plan.get() {
            return Ok(p);
        }
        let p = crate::plan::Plan::new(&self.graph)?;
        Ok(self.plan.get_or_init(|| p))
    }

    /// `(node, kernel)` for every node: which kernel each layer runs on.
    pub fn kernels(&self) -> Result<Vec<(String, &'static str)>> {
        Ok(self.plan()?.kernels())
    }

    /// Layer table and totals.
    pub fn info(&self) -> Result<ModelInfo> {
        crate::metrics::model_info(&self.graph)
    }

    /// Accuracy, loss, per-class accuracy and confusion matrix on `data`.
    pub fn evaluate(&self, data: &Dataset) -> Result<EvalReport> {
        crate::metrics::evaluate_with(&self.graph, data, 256, &self.preprocess)
    }

    /// Runs the model on an input tensor (for the first graph input).
    pub fn run(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let name = self
            .graph
            .inputs
            .first()
            .map(|v| v.name.as_str())
            .ok_or_else(|| Error::Graph("the graph has no input".into()))?;
        self.plan()?.run(&[(name, x)])
    }

    /// Class probabilities for one grey image given as raw 0..255 pixels, row-major.
    pub fn classify(&self, pixels: &[u8]) -> Result<Vec<f32>> {
        let x = self.input_from_pixels(pixels)?;
        Ok(Session::probabilities(&self.run(&x)?))
    }

    /// The model's input for one grey image of raw 0..255 pixels (batch 1, preprocessed), as
    /// [`Session::classify`] builds it; for running it elsewhere (the GPU).
    pub fn input_from_pixels(&self, pixels: &[u8]) -> Result<Tensor> {
        let input = self
            .graph
            .inputs
            .first()
            .ok_or_else(|| Error::Graph("the graph has no input".into()))?;
        let shape = input.concrete(1);
        let need: usize = shape.iter().product();
        if pixels.len() != need {
            return Err(Error::Input {
                name: input.name.clone(),
                detail: format!("expected {need} pixels, got {}", pixels.len()),
            });
        }
        crate::tensor::from_vec(
            &shape,
            pixels.iter().map(|&p| self.preprocess.apply(p)).collect(),
        )
    }

    /// Softmax of the first output's values (outputs may already be (log-)probabilities; the
    /// softmax of a log-softmax is the same softmax).
    pub fn probabilities(outputs: &[Tensor]) -> Vec<f32> {
        let logits: Vec<f32> = outputs
            .first()
            .map(|t| t.iter().copied().collect())
            .unwrap_or_default();
        let mx = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = logits.iter().map(|v| (v - mx).exp()).collect();
        let s: f32 = e.iter().sum();
        e.into_iter().map(|v| v / s).collect()
    }

    /// Trains (fine-tunes) the model in place.
    pub fn train(
        &mut self,
        data: &Dataset,
        val: Option<&Dataset>,
        cfg: &TrainConfig,
        on_progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<TrainSummary> {
        self.train_masked(data, val, cfg, &crate::train::Masks::new(), on_progress)
    }

    /// Trains in place keeping the weights that `masks` mark as pruned at exactly zero (see
    /// [`crate::train::train_masked`]); used to fine-tune a pruned model without regrowing it.
    pub fn train_masked(
        &mut self,
        data: &Dataset,
        val: Option<&Dataset>,
        cfg: &TrainConfig,
        masks: &crate::train::Masks,
        on_progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<TrainSummary> {
        let cfg = self.before_training(cfg);
        crate::train::train_masked(&mut self.graph, data, val, &cfg, masks, on_progress)
    }

    /// The config with this model's preprocessing filled in; forgets the plan, whose packed
    /// weights the training is about to change.
    fn before_training(&mut self, cfg: &TrainConfig) -> TrainConfig {
        self.plan = OnceLock::new();
        TrainConfig {
            preprocess: cfg.preprocess.or(Some(self.preprocess)),
            ..cfg.clone()
        }
    }

    /// Trains in place by knowledge distillation from `teacher` ([`crate::train::distill`]),
    /// keeping the weights that `masks` mark as pruned at zero.
    pub fn distill(
        &mut self,
        teacher: &Graph,
        params: &crate::train::distill::DistillParams,
        data: &Dataset,
        cfg: &TrainConfig,
        masks: &crate::train::Masks,
        on_progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<TrainSummary> {
        let cfg = self.before_training(cfg);
        crate::train::distill::distill(
            &mut self.graph,
            teacher,
            data,
            None,
            params,
            &cfg,
            Some(masks),
            on_progress,
        )
    }

    /// The model as ONNX bytes.
    pub fn export_onnx(&self) -> Result<Vec<u8>> {
        crate::format::onnx::export(&self.graph)
    }
}

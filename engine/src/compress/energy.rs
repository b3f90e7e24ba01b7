//! Energy per inference, estimated from operation counts by arithmetic type and from the bytes
//! moved, with the 45 nm figures of Horowitz (ISSCC 2014, "Computing's energy problem (and what
//! we can do about it)") as Han et al. use them (2015, "Learning both Weights and Connections",
//! table 1; 2016, "EIE").
//!
//! The model, stated so it can be argued with:
//! - **Compute**: every multiply-accumulate that is not skipped (multiplications by a zero
//!   weight are skipped, as in the reports' MACs) costs one multiply and one add of the layer's
//!   arithmetic type ([`Arith`]). Elementwise ops, pooling and normalisation are not counted:
//!   for these models they are well under 1 % of the MACs.
//! - **Weights**: every stored weight byte is read once per inference, from on-chip SRAM when
//!   the whole model's weight bytes fit in [`EnergyTable::sram_bytes`], else from DRAM. This is
//!   Deep Compression's argument: a model that fits on chip avoids the 128× dearer DRAM access.
//! - **Activations**: each Gemm/Conv/MatMul reads its input and writes its output once, in SRAM,
//!   at 32 bits per value (8 bits for integer layers).
//!
//! The figures are estimates for a 45 nm chip, not measurements of this machine; they rank
//! compressed variants of one model against each other.

use crate::graph::{Graph, Op};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Energy of one operation or access, in picojoules, and the on-chip memory size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnergyTable {
    /// 32-bit float multiply (3.7 pJ).
    pub f32_mul: f64,
    /// 32-bit float add (0.9 pJ).
    pub f32_add: f64,
    /// 32-bit integer add (0.1 pJ).
    pub i32_add: f64,
    /// 8-bit integer multiply (0.2 pJ).
    pub i8_mul: f64,
    /// 32-bit SRAM access (5 pJ, as Han et al. 2015 table 1).
    pub sram_32: f64,
    /// 32-bit DRAM access (640 pJ).
    pub dram_32: f64,
    /// On-chip SRAM capacity for weights, in bytes (a knob; default 512 KiB).
    pub sram_bytes: usize,
}

impl Default for EnergyTable {
    fn default() -> Self {
        Self::horowitz_45nm()
    }
}

impl EnergyTable {
    /// Horowitz 2014, 45 nm, 0.9 V, with a 512 KiB on-chip SRAM for weights.
    pub fn horowitz_45nm() -> Self {
        EnergyTable {
            f32_mul: 3.7,
            f32_add: 0.9,
            i32_add: 0.1,
            i8_mul: 0.2,
            sram_32: 5.0,
            dram_32: 640.0,
            sram_bytes: 512 * 1024,
        }
    }

    /// Energy of one multiply-accumulate in `arith`, in pJ.
    pub fn mac(&self, arith: Arith) -> f64 {
        match arith {
            Arith::F32 => self.f32_mul + self.f32_add,
            // Integer multiply into an int32 accumulator; 8-bit multiplier cost for ≤ 8 bits.
            Arith::Int8 => self.i8_mul + self.i32_add,
            // ±α weights: the sign flips the operand and one float add accumulates; the scale is
            // one multiply per output, not per MAC.
            Arith::SignAdd => self.f32_add,
            // ±2^k weights: an exponent add (integer) plus the float accumulate.
            Arith::ShiftAdd => self.i32_add + self.f32_add,
        }
    }
}

/// The arithmetic a layer's multiply-accumulates use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arith {
    /// f32 multiply and add (dense, pruned, shared weights decoded to f32, low-rank factors).
    F32,
    /// Integer multiply (≤ 8-bit operands) with int32 accumulation.
    Int8,
    /// Binary or ternary weights: sign flip and add.
    SignAdd,
    /// Power-of-two weights: shift (exponent add) and add.
    ShiftAdd,
}

/// One Gemm/Conv/MatMul row of the estimate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerEnergy {
    /// Node name.
    pub node: String,
    /// Multiply-accumulates per image that are not skipped.
    pub macs: u64,
    /// Arithmetic type.
    pub arith: Arith,
    /// `macs · mac(arith)`, pJ.
    pub compute_pj: f64,
    /// Input and output activations moved through SRAM, pJ.
    pub activation_pj: f64,
}

/// Energy per inference (one image).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnergyReport {
    /// Per layer.
    pub layers: Vec<LayerEnergy>,
    /// Stored weight bytes read once per inference.
    pub weight_bytes: usize,
    /// Whether they fit in on-chip SRAM.
    pub weights_on_chip: bool,
    /// Sum of the layers' compute, pJ.
    pub compute_pj: f64,
    /// Weight reads, pJ.
    pub weight_pj: f64,
    /// Activation traffic, pJ.
    pub activation_pj: f64,
    /// Everything, pJ.
    pub total_pj: f64,
}

/// Estimates the energy of one inference of `g`. `arith` gives each weight's arithmetic by
/// weight name (`None` = f32); `weight_bytes` is the model's stored weight bytes (the reports'
/// `bytes_after`). MACs skip zero weights.
pub fn estimate(
    g: &Graph,
    arith: &dyn Fn(&str) -> Option<Arith>,
    weight_bytes: usize,
    table: &EnergyTable,
) -> Result<EnergyReport> {
    let info = crate::metrics::model_info(g)?;
    let shapes = g.infer_shapes(1)?;
    let mut layers = Vec::new();
    for (n, l) in g.nodes.iter().zip(&info.layers) {
        if !matches!(n.op, Op::Gemm(_) | Op::Conv(_) | Op::MatMul) {
            continue;
        }
        let w = n
            .inputs
            .get(1)
            .and_then(|w| g.weights.get(w).map(|t| (w, t)));
        let (a, macs) = match w {
            Some((name, t)) => {
                let nz = t.iter().filter(|v| **v != 0.0).count() as u128;
                let macs = (l.macs as u128 * nz / t.len().max(1) as u128) as u64;
                (arith(name).unwrap_or(Arith::F32), macs)
            }
            None => (Arith::F32, l.macs),
        };
        let numel = |v: &str| shapes.get(v).map_or(0, |s| s.iter().product::<usize>());
        let values = n.inputs.first().map_or(0, |i| numel(i)) + numel(&n.outputs[0]);
        let bits = if a == Arith::Int8 { 8.0 } else { 32.0 };
        let activation_pj = values as f64 * bits / 32.0 * table.sram_32;
        layers.push(LayerEnergy {
            node: n.name.clone(),
            macs,
            arith: a,
            compute_pj: macs as f64 * table.mac(a),
            activation_pj,
        });
    }
    let weights_on_chip = weight_bytes <= table.sram_bytes;
    let per_32 = if weights_on_chip {
        table.sram_32
    } else {
        table.dram_32
    };
    let weight_pj = weight_bytes as f64 / 4.0 * per_32;
    let compute_pj: f64 = layers.iter().map(|l| l.compute_pj).sum();
    let activation_pj: f64 = layers.iter().map(|l| l.activation_pj).sum();
    let total_pj = compute_pj + weight_pj + activation_pj;
    if !total_pj.is_finite() {
        return Err(Error::Invalid("energy estimate overflowed".into()));
    }
    Ok(EnergyReport {
        layers,
        weight_bytes,
        weights_on_chip,
        compute_pj,
        weight_pj,
        activation_pj,
        total_pj,
    })
}

/// The estimate for `g` as it stands, every weight dense f32 (`4 · params` bytes).
pub fn estimate_dense(g: &Graph, table: &EnergyTable) -> Result<EnergyReport> {
    let bytes = g.weights.values().map(|t| t.len() * 4).sum();
    estimate(g, &|_| None, bytes, table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::{Arch, build};

    #[test]
    fn dense_lenet_300_100_by_hand() {
        let g = build(Arch::Lenet300100, 1).unwrap();
        let t = EnergyTable::horowitz_45nm();
        let e = estimate_dense(&g, &t).unwrap();
        // 266,200 MACs × 4.6 pJ; 266,610 weights × 4 B > 512 KiB: DRAM at 640 pJ per 32 bits.
        assert_eq!(e.layers.iter().map(|l| l.macs).sum::<u64>(), 266_200);
        assert!((e.compute_pj - 266_200.0 * 4.6).abs() < 1e-3);
        assert!(!e.weights_on_chip);
        assert!((e.weight_pj - 266_610.0 * 640.0).abs() < 1e-3);
        // Activations: (784 + 300) + (300 + 100) + (100 + 10) values × 5 pJ.
        assert!((e.activation_pj - 1594.0 * 5.0).abs() < 1e-6);
        assert!((e.total_pj - (e.compute_pj + e.weight_pj + e.activation_pj)).abs() < 1e-6);
    }

    #[test]
    fn zeros_int8_and_on_chip_weights_cut_energy() {
        let mut g = build(Arch::TinyMlp, 1).unwrap();
        let t = EnergyTable::horowitz_45nm();
        let dense = estimate_dense(&g, &t).unwrap();
        // Zero half of fc1: its MACs halve.
        let w = g.weights.get_mut("fc1.weight").unwrap();
        let n = w.len();
        w.iter_mut().take(n / 2).for_each(|v| *v = 0.0);
        let int8 = estimate(&g, &|_| Some(Arith::Int8), 30_000, &t).unwrap();
        assert_eq!(int8.layers[0].macs, dense.layers[0].macs / 2);
        assert!(int8.weights_on_chip);
        assert!((int8.layers[1].compute_pj - dense.layers[1].macs as f64 * 0.3).abs() < 1e-6);
        assert!(dense.weights_on_chip && int8.total_pj < dense.total_pj / 2.0);
        assert!(t.mac(Arith::SignAdd) < t.mac(Arith::ShiftAdd));
        assert!(t.mac(Arith::ShiftAdd) < t.mac(Arith::F32));
    }
}

//! Shape inference over a whole graph.

use super::{Graph, Op};
use crate::tensor::DType;
use crate::{Error, Result};
use std::collections::HashMap;

/// Shapes of every value for the given batch size; errors name the node and the shapes.
pub fn infer(g: &Graph, batch: usize) -> Result<HashMap<String, Vec<usize>>> {
    let mut shapes: HashMap<String, Vec<usize>> = HashMap::new();
    for v in &g.inputs {
        shapes.insert(v.name.clone(), v.concrete(batch));
    }
    for (k, w) in &g.weights {
        shapes.insert(k.clone(), w.shape().to_vec());
    }
    for n in &g.nodes {
        let ins: Vec<Option<&[usize]>> = n
            .inputs
            .iter()
            .map(|i| {
                if i.is_empty() {
                    None
                } else {
                    shapes.get(i).map(|s| s.as_slice())
                }
            })
            .collect();
        if let Some((i, _)) = n
            .inputs
            .iter()
            .enumerate()
            .find(|(k, s)| !s.is_empty() && ins[*k].is_none())
        {
            return Err(Error::Graph(format!(
                "node `{}` reads `{}` before it is defined",
                n.name, n.inputs[i]
            )));
        }
        let outs = crate::ops::infer_shape(n, &ins)?;
        for (name, s) in n.outputs.iter().zip(outs) {
            if crate::tensor::checked_numel(&s)? > super::limits::MAX_TENSOR_ELEMENTS {
                return Err(Error::Limit {
                    what: "intermediate tensor",
                    got: crate::tensor::checked_numel(&s)? as u64,
                    limit: super::limits::MAX_TENSOR_ELEMENTS as u64,
                });
            }
            shapes.insert(name.clone(), s);
        }
    }
    Ok(shapes)
}

/// Layout ops that move values without computing on them: their output has the element type of
/// their first input, so they carry int8 values as well as floats (as in QDQ graphs).
fn keeps_type(op: &Op) -> bool {
    matches!(
        op,
        Op::Flatten { .. }
            | Op::Reshape { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Transpose { .. }
    )
}

/// The element type of every value: node outputs from their op
/// ([`crate::graph::Op::output_dtype`]), graph inputs and weights from the ops that read them
/// ([`crate::graph::Op::input_dtype`]; `F32` when nothing reads them). Integer values are held
/// as exact integers in `f32` tensors (see [`crate::tensor::F32_EXACT_INT`]). Errors when a value
/// is read as two different types (layout ops such as Reshape and Flatten pass their input's type on), or as a type other than the one its producer gives it.
pub fn dtypes(g: &Graph) -> Result<HashMap<String, DType>> {
    let mut out: HashMap<String, DType> = HashMap::new();
    // Nodes are in topological order, so a layout op's input type is known when it is reached.
    for n in &g.nodes {
        for (k, o) in n.outputs.iter().enumerate() {
            let t = match n.inputs.first() {
                Some(x) if k == 0 && keeps_type(&n.op) => out.get(x).copied().unwrap_or(DType::F32),
                _ => n.op.output_dtype(k),
            };
            out.insert(o.clone(), t);
        }
    }
    let mut sources: HashMap<&str, (DType, &str)> = HashMap::new();
    for n in &g.nodes {
        for (i, name) in n.inputs.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
            let want = match out.get(name) {
                // A layout op reads a computed value of any type (and passes it on).
                Some(&have) if i == 0 && keeps_type(&n.op) => have,
                _ => n.op.input_dtype(i),
            };
            if let Some(&have) = out.get(name) {
                if have != want {
                    return Err(Error::Graph(format!(
                        "node `{}` ({}) reads `{name}` as {want}, but it holds {have} values",
                        n.name,
                        n.op.name()
                    )));
                }
                continue;
            }
            match sources.get(name.as_str()) {
                Some(&(have, by)) if have != want => {
                    return Err(Error::Graph(format!(
                        "`{name}` is read as {have} by `{by}` and as {want} by `{}` ({})",
                        n.name,
                        n.op.name()
                    )));
                }
                Some(_) => {}
                None => {
                    sources.insert(name.as_str(), (want, n.name.as_str()));
                }
            }
        }
    }
    for v in &g.inputs {
        let t = sources.get(v.name.as_str()).map_or(DType::F32, |s| s.0);
        out.insert(v.name.clone(), t);
    }
    for k in g.weights.keys() {
        let t = sources.get(k.as_str()).map_or(DType::F32, |s| s.0);
        out.insert(k.clone(), t);
    }
    Ok(out)
}

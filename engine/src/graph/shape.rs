//! Shape inference over a whole graph.

use super::Graph;
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

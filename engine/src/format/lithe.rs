//! The `.lithe` container: a model with its weight-shared layers stored as codebooks and
//! entropy-coded index and gap streams (Deep Compression stages 2 and 3).
//!
//! Layout (integers little-endian):
//!
//! | field | bytes |
//! |---|---|
//! | magic `b"LITHE"`, version `u8` (= 1) | 6 |
//! | `graph_len: u32`, then an ONNX model of `graph_len` bytes | 4 + … |
//! | `layers: u32` | 4 |
//! | per layer: `name_len: u16`, name (UTF-8), layer record ([`SharedTensor::encode`]) | … |
//!
//! The graph structure is the ONNX export of the model (the same bytes [`onnx::export`] writes)
//! in which every shared weight is moved from the initializers to a graph input with its fixed
//! shape, so the ONNX part holds the structure plus the weights that are not shared (biases).
//! The decoder imports it, checks that each layer names such an input with the same shape,
//! removes the input and puts the decoded weight back. Decoded weights are bit-identical to
//! [`SharedTensor::decode`].
//!
//! Decoder limits: at most [`MAX_LAYERS`] layer records; every length is checked against the
//! bytes that remain before it is used; the ONNX part is subject to [`onnx::LIMITS`]; each
//! layer record to the limits in [`SharedTensor`]'s decoder. Trailing bytes are an error.

use crate::compress::Compressed;
use crate::compress::huffman::Reader;
use crate::compress::kmeans::{Coding, LayerBytes, SharedTensor};
use crate::format::onnx;
use crate::graph::{Dim, Graph, ValueInfo};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// File magic.
pub const MAGIC: &[u8; 5] = b"LITHE";
/// Format version written and read.
pub const VERSION: u8 = 1;
/// Most layer records a file may declare.
pub const MAX_LAYERS: usize = 4096;

/// Exact byte counts of each section of an encoded container; they add up to its length.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerBytes {
    /// Magic, version, lengths, layer names and layer-record headers (shape, widths).
    pub headers: usize,
    /// The ONNX graph (structure and the weights that are not shared).
    pub graph: usize,
    /// f32 codebooks.
    pub codebooks: usize,
    /// Huffman code-length tables and stream headers.
    pub tables: usize,
    /// Coded index streams.
    pub indices: usize,
    /// Coded gap (relative position) streams.
    pub gaps: usize,
}

impl ContainerBytes {
    /// Sum of every section (= the container's length).
    pub fn total(&self) -> usize {
        self.headers + self.graph + self.codebooks + self.tables + self.indices + self.gaps
    }
}

fn bad(detail: impl Into<String>) -> Error {
    Error::Decode {
        what: ".lithe container",
        detail: detail.into(),
    }
}

/// Encodes `g` with the weights named in `shared` stored as shared layers. Every shared weight
/// must be in `g` and equal, bit for bit, to its [`SharedTensor::decode`].
pub fn encode(
    g: &Graph,
    shared: &BTreeMap<String, SharedTensor>,
    coding: Coding,
) -> Result<(Vec<u8>, ContainerBytes)> {
    if shared.len() > MAX_LAYERS {
        return Err(Error::Limit {
            what: "shared layers",
            got: shared.len() as u64,
            limit: MAX_LAYERS as u64,
        });
    }
    let mut rest = g.clone();
    for (name, s) in shared {
        let w = rest
            .weights
            .remove(name)
            .ok_or_else(|| Error::Invalid(format!("shared weight `{name}` is not in the graph")))?;
        let d = s.decode()?;
        if w.shape() != d.shape()
            || w.iter()
                .zip(d.iter())
                .any(|(a, b)| a.to_bits() != b.to_bits())
        {
            return Err(Error::Invalid(format!(
                "the graph's `{name}` differs from its shared encoding"
            )));
        }
        rest.inputs.push(ValueInfo {
            name: name.clone(),
            shape: s.shape.iter().map(|&d| Dim::Fixed(d)).collect(),
        });
    }
    let onnx_bytes = onnx::export(&rest)?;
    let mut out = Vec::new();
    let mut sizes = ContainerBytes::default();
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    let graph_len = u32::try_from(onnx_bytes.len()).map_err(|_| Error::Limit {
        what: "graph bytes",
        got: onnx_bytes.len() as u64,
        limit: u32::MAX as u64,
    })?;
    out.extend_from_slice(&graph_len.to_le_bytes());
    out.extend_from_slice(&onnx_bytes);
    out.extend_from_slice(&(shared.len() as u32).to_le_bytes());
    sizes.graph = onnx_bytes.len();
    sizes.headers = 5 + 1 + 4 + 4;
    for (name, s) in shared {
        let n = u16::try_from(name.len())
            .map_err(|_| Error::Invalid(format!("weight name of {} bytes", name.len())))?;
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        let (rec, b): (Vec<u8>, LayerBytes) = s.encode(coding)?;
        out.extend_from_slice(&rec);
        sizes.headers += 2 + name.len() + b.header;
        sizes.codebooks += b.codebook;
        sizes.tables += b.tables;
        sizes.indices += b.indices;
        sizes.gaps += b.gaps;
    }
    debug_assert_eq!(sizes.total(), out.len());
    Ok((out, sizes))
}

/// Encodes the result of a recipe with a `share` pass (see [`encode`]).
pub fn encode_compressed(c: &Compressed, coding: Coding) -> Result<(Vec<u8>, ContainerBytes)> {
    encode(&c.graph, &c.shared, coding)
}

/// Decodes a container into a validated graph and the shared layers it held.
pub fn decode_layers(bytes: &[u8]) -> Result<(Graph, BTreeMap<String, SharedTensor>)> {
    let mut r = Reader::new(bytes, ".lithe container");
    if r.take(5)? != MAGIC {
        return Err(bad("not a .lithe file (bad magic)"));
    }
    let v = r.u8()?;
    if v != VERSION {
        return Err(bad(format!("version {v}, this build reads {VERSION}")));
    }
    let graph_len = r.u32()? as usize;
    let mut g = onnx::import(r.take(graph_len)?)?;
    let layers = r.u32()? as usize;
    if layers > MAX_LAYERS {
        return Err(Error::Limit {
            what: "shared layers",
            got: layers as u64,
            limit: MAX_LAYERS as u64,
        });
    }
    let mut shared = BTreeMap::new();
    for _ in 0..layers {
        let s = r.take(2)?;
        let n = u16::from_le_bytes([s[0], s[1]]) as usize;
        let name = std::str::from_utf8(r.take(n)?)
            .map_err(|_| bad("a layer name is not UTF-8"))?
            .to_string();
        let t = SharedTensor::decode_from(&mut r)?;
        let at = g
            .inputs
            .iter()
            .position(|v| v.name == name)
            .ok_or_else(|| bad(format!("layer `{name}` is not a placeholder of the graph")))?;
        let want: Vec<Dim> = t.shape.iter().map(|&d| Dim::Fixed(d)).collect();
        if g.inputs[at].shape != want {
            return Err(bad(format!(
                "layer `{name}` does not have the graph's shape"
            )));
        }
        if g.weights.contains_key(&name) || shared.contains_key(&name) {
            return Err(bad(format!("layer `{name}` is stored twice")));
        }
        g.inputs.remove(at);
        g.weights.insert(name.clone(), t.decode()?);
        shared.insert(name, t);
    }
    if r.rest() != 0 {
        return Err(bad(format!("{} trailing bytes", r.rest())));
    }
    if g.inputs.is_empty() {
        return Err(bad("the graph has no input left"));
    }
    g.validate()?;
    g.infer_shapes(1)?;
    Ok((g, shared))
}

/// Decodes a container into a validated graph with every weight restored.
pub fn decode(bytes: &[u8]) -> Result<Graph> {
    decode_layers(bytes).map(|(g, _)| g)
}

//! The `.lithe` container: a model with its weight-shared layers stored as codebooks and
//! entropy-coded index and gap streams (Deep Compression stages 2 and 3).
//!
//! Layout (integers little-endian):
//!
//! | field | bytes |
//! |---|---|
//! | magic `b"LITHE"`, version `u8` (1 or 2) | 6 |
//! | `graph_len: u32`, then an ONNX model of `graph_len` bytes | 4 + … |
//! | `layers: u32` | 4 |
//! | per layer: `name_len: u16`, name (UTF-8), then the layer record | … |
//!
//! Version 1 holds only weight-shared layers: each record is [`SharedTensor::encode`]'s bytes.
//! Version 2 starts each record with `kind: u8`:
//!
//! | kind | record |
//! |---|---|
//! | 0 shared (k-means) | [`SharedTensor::encode`] (self-delimiting) |
//! | 1 linear quantized | `len: u32`, then [`QuantizedTensor::encode`] (`len` bytes) |
//! | 2 low-bit (log2, binary, ternary, DoReFa) | `len: u32`, then [`LowBitTensor::encode`] |
//! | 3 sparse f32 (pruned) | `len: u32`, then [`sparse::encode`] (CSR or bitmask) |
//!
//! The writer uses version 1 when every stored layer is shared (those files are byte for byte
//! what earlier builds wrote) and version 2 otherwise; the reader takes both.
//!
//! The graph structure is the ONNX export of the model (the same bytes [`onnx::export`] writes)
//! in which every stored weight is moved from the initializers to a graph input with its fixed
//! shape, so the ONNX part holds the structure plus the weights that are not stored as layers
//! (biases, dense weights). The decoder imports it, checks that each layer names such an input
//! with the same shape, removes the input and puts the decoded weight back. Decoded weights are
//! bit-identical to the graph that was encoded (the encoder refuses a graph that differs from
//! its codes, and stores a weight sparse only when it holds no `-0.0`).
//!
//! Decoder limits: at most [`MAX_LAYERS`] layer records; every length is checked against the
//! bytes that remain before it is used; the ONNX part is subject to [`onnx::LIMITS`]; each
//! layer record to the limits of its own decoder. Trailing bytes are an error.

use crate::compress::Compressed;
use crate::compress::huffman::Reader;
use crate::compress::kmeans::{Coding, LayerBytes, SharedTensor};
use crate::compress::lowbit::LowBitTensor;
use crate::compress::quantize::QuantizedTensor;
use crate::compress::sparse;
use crate::format::onnx;
use crate::graph::{Dim, Graph, ValueInfo};
use crate::tensor::Tensor;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// File magic.
pub const MAGIC: &[u8; 5] = b"LITHE";
/// Newest format version, written when a layer is not weight-shared; 1 and 2 are read.
pub const VERSION: u8 = 2;
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
    /// Linear and low-bit quantized layers: their scales and packed codes (with their own
    /// small headers).
    #[serde(default)]
    pub codes: usize,
    /// Sparse f32 layers (CSR or bitmask, with their headers).
    #[serde(default)]
    pub sparse: usize,
}

impl ContainerBytes {
    /// Sum of every section (= the container's length).
    pub fn total(&self) -> usize {
        self.headers
            + self.graph
            + self.codebooks
            + self.tables
            + self.indices
            + self.gaps
            + self.codes
            + self.sparse
    }
}

/// The layers a container stores outside its ONNX part, by weight name (a name is in at most
/// one map).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Layers {
    /// Weight-shared (k-means) layers: codebook and Huffman-coded index and gap streams.
    pub shared: BTreeMap<String, SharedTensor>,
    /// Linear 1–8-bit quantized layers.
    pub quantized: BTreeMap<String, QuantizedTensor>,
    /// Log2, binary, ternary and DoReFa layers.
    pub lowbit: BTreeMap<String, LowBitTensor>,
    /// Pruned f32 layers stored sparse, with the encoding used.
    pub sparse: BTreeMap<String, sparse::Encoding>,
}

impl Layers {
    /// How many layers are stored.
    pub fn len(&self) -> usize {
        self.shared.len() + self.quantized.len() + self.lowbit.len() + self.sparse.len()
    }

    /// No layer is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The layers of a recipe's result: its shared, quantized and low-bit weights, plus every
    /// other weight of rank ≥ 2 whose shortest [`sparse`] encoding is not dense (pruned layers).
    pub fn of(c: &Compressed) -> Result<Layers> {
        let mut l = Layers {
            shared: c.shared.clone(),
            quantized: c.quantized.clone(),
            lowbit: c.lowbit.clone(),
            sparse: BTreeMap::new(),
        };
        l.add_sparse(&c.graph)?;
        Ok(l)
    }

    /// Only the pruned layers of `g` (every weight of rank ≥ 2 whose shortest [`sparse`]
    /// encoding is not dense), e.g. for a model fine-tuned after compression, whose codes no
    /// longer match its weights.
    pub fn sparse_of(g: &Graph) -> Result<Layers> {
        let mut l = Layers::default();
        l.add_sparse(g)?;
        Ok(l)
    }

    fn add_sparse(&mut self, g: &Graph) -> Result<()> {
        let l = self;
        for (name, w) in &g.weights {
            if w.ndim() < 2 || l.holds(name) || w.iter().any(|v| v.to_bits() == 0x8000_0000) {
                continue;
            }
            let (enc, _) = sparse::best_len(w)?;
            if enc != sparse::Encoding::Dense {
                l.sparse.insert(name.clone(), enc);
            }
        }
        Ok(())
    }

    fn holds(&self, name: &str) -> bool {
        self.shared.contains_key(name)
            || self.quantized.contains_key(name)
            || self.lowbit.contains_key(name)
            || self.sparse.contains_key(name)
    }

    /// The weight a layer decodes to (the graph's weight for a sparse layer).
    fn decoded(&self, name: &str, g: &Graph) -> Result<Tensor> {
        if let Some(s) = self.shared.get(name) {
            return s.decode();
        }
        if let Some(q) = self.quantized.get(name) {
            return q.dequantize();
        }
        if let Some(b) = self.lowbit.get(name) {
            return b.decode();
        }
        g.weights
            .get(name)
            .cloned()
            .ok_or_else(|| Error::Invalid(format!("stored weight `{name}` is not in the graph")))
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
    encode_layers(
        g,
        &Layers {
            shared: shared.clone(),
            ..Layers::default()
        },
        coding,
    )
}

/// Encodes `g` with every weight named in `layers` stored as its layer record (shared ones with
/// `coding`). Each such weight must be in `g` and equal, bit for bit, to what its record
/// decodes to; a name may be in only one of the maps.
pub fn encode_layers(
    g: &Graph,
    layers: &Layers,
    coding: Coding,
) -> Result<(Vec<u8>, ContainerBytes)> {
    if layers.len() > MAX_LAYERS {
        return Err(Error::Limit {
            what: "stored layers",
            got: layers.len() as u64,
            limit: MAX_LAYERS as u64,
        });
    }
    let mut names: Vec<&String> = layers
        .shared
        .keys()
        .chain(layers.quantized.keys())
        .chain(layers.lowbit.keys())
        .chain(layers.sparse.keys())
        .collect();
    names.sort();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::Invalid(format!(
            "weight `{}` is stored as two kinds of layer",
            w[0]
        )));
    }
    let mut rest = g.clone();
    let mut sparse_bytes = BTreeMap::new();
    for name in &names {
        let w = rest
            .weights
            .remove(*name)
            .ok_or_else(|| Error::Invalid(format!("stored weight `{name}` is not in the graph")))?;
        let d = layers.decoded(name, g)?;
        if w.shape() != d.shape()
            || w.iter()
                .zip(d.iter())
                .any(|(a, b)| a.to_bits() != b.to_bits())
        {
            return Err(Error::Invalid(format!(
                "the graph's `{name}` differs from its stored encoding"
            )));
        }
        if let Some(&enc) = layers.sparse.get(*name) {
            let b = sparse::encode(&w, enc)?;
            let (_, back) = sparse::decode(&b)?;
            if back
                .iter()
                .zip(w.iter())
                .any(|(a, b)| a.to_bits() != b.to_bits())
            {
                return Err(Error::Invalid(format!(
                    "`{name}` holds -0.0, which a sparse layer does not keep"
                )));
            }
            sparse_bytes.insert(name.to_string(), b);
        }
        rest.inputs.push(ValueInfo {
            name: name.to_string(),
            shape: d.shape().iter().map(|&d| Dim::Fixed(d)).collect(),
        });
    }
    let onnx_bytes = onnx::export(&rest)?;
    let v1 = layers.len() == layers.shared.len();
    let mut out = Vec::new();
    let mut sizes = ContainerBytes::default();
    out.extend_from_slice(MAGIC);
    out.push(if v1 { 1 } else { VERSION });
    let graph_len = u32::try_from(onnx_bytes.len()).map_err(|_| Error::Limit {
        what: "graph bytes",
        got: onnx_bytes.len() as u64,
        limit: u32::MAX as u64,
    })?;
    out.extend_from_slice(&graph_len.to_le_bytes());
    out.extend_from_slice(&onnx_bytes);
    out.extend_from_slice(&(layers.len() as u32).to_le_bytes());
    sizes.graph = onnx_bytes.len();
    sizes.headers = 5 + 1 + 4 + 4;
    let name_header = |out: &mut Vec<u8>, sizes: &mut ContainerBytes, name: &str| -> Result<()> {
        let n = u16::try_from(name.len())
            .map_err(|_| Error::Invalid(format!("weight name of {} bytes", name.len())))?;
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        sizes.headers += 2 + name.len();
        Ok(())
    };
    for (name, s) in &layers.shared {
        name_header(&mut out, &mut sizes, name)?;
        if !v1 {
            out.push(0);
            sizes.headers += 1;
        }
        let (rec, b): (Vec<u8>, LayerBytes) = s.encode(coding)?;
        out.extend_from_slice(&rec);
        sizes.headers += b.header;
        sizes.codebooks += b.codebook;
        sizes.tables += b.tables;
        sizes.indices += b.indices;
        sizes.gaps += b.gaps;
    }
    let records = layers
        .quantized
        .iter()
        .map(|(n, q)| Ok((n, 1u8, q.encode()?)))
        .chain(layers.lowbit.iter().map(|(n, b)| Ok((n, 2u8, b.encode()?))))
        .chain(sparse_bytes.iter().map(|(n, b)| Ok((n, 3u8, b.clone()))))
        .collect::<Result<Vec<_>>>()?;
    for (name, kind, rec) in records {
        name_header(&mut out, &mut sizes, name)?;
        let len = u32::try_from(rec.len()).map_err(|_| Error::Limit {
            what: "layer record bytes",
            got: rec.len() as u64,
            limit: u32::MAX as u64,
        })?;
        out.push(kind);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&rec);
        sizes.headers += 5;
        if kind == 3 {
            sizes.sparse += rec.len();
        } else {
            sizes.codes += rec.len();
        }
    }
    debug_assert_eq!(sizes.total(), out.len());
    Ok((out, sizes))
}

/// Encodes the result of a recipe: its shared, quantized and low-bit layers and its pruned
/// layers stored sparse ([`Layers::of`]).
pub fn encode_compressed(c: &Compressed, coding: Coding) -> Result<(Vec<u8>, ContainerBytes)> {
    encode_layers(&c.graph, &Layers::of(c)?, coding)
}

/// Decodes a container into a validated graph and the shared layers it held.
pub fn decode_layers(bytes: &[u8]) -> Result<(Graph, BTreeMap<String, SharedTensor>)> {
    decode_all(bytes).map(|(g, l)| (g, l.shared))
}

/// Decodes a container into a validated graph and every layer it stored.
pub fn decode_all(bytes: &[u8]) -> Result<(Graph, Layers)> {
    let mut r = Reader::new(bytes, ".lithe container");
    if r.take(5)? != MAGIC {
        return Err(bad("not a .lithe file (bad magic)"));
    }
    let v = r.u8()?;
    if v != 1 && v != VERSION {
        return Err(bad(format!(
            "version {v}, this build reads 1 and {VERSION}"
        )));
    }
    let graph_len = r.u32()? as usize;
    let mut g = onnx::import(r.take(graph_len)?)?;
    let count = r.u32()? as usize;
    if count > MAX_LAYERS {
        return Err(Error::Limit {
            what: "stored layers",
            got: count as u64,
            limit: MAX_LAYERS as u64,
        });
    }
    let mut layers = Layers::default();
    for _ in 0..count {
        let s = r.take(2)?;
        let n = u16::from_le_bytes([s[0], s[1]]) as usize;
        let name = std::str::from_utf8(r.take(n)?)
            .map_err(|_| bad("a layer name is not UTF-8"))?
            .to_string();
        let kind = if v == 1 { 0 } else { r.u8()? };
        if layers.holds(&name) || g.weights.contains_key(&name) {
            return Err(bad(format!("layer `{name}` is stored twice")));
        }
        let w = match kind {
            0 => {
                let t = SharedTensor::decode_from(&mut r)?;
                let w = t.decode()?;
                layers.shared.insert(name.clone(), t);
                w
            }
            1..=3 => {
                let len = r.u32()? as usize;
                let rec = r.take(len)?;
                match kind {
                    1 => {
                        let q = QuantizedTensor::decode(rec)?;
                        let w = q.dequantize()?;
                        layers.quantized.insert(name.clone(), q);
                        w
                    }
                    2 => {
                        let b = LowBitTensor::decode_bytes(rec)?;
                        let w = b.decode()?;
                        layers.lowbit.insert(name.clone(), b);
                        w
                    }
                    _ => {
                        let (enc, w) = sparse::decode(rec)?;
                        layers.sparse.insert(name.clone(), enc);
                        w
                    }
                }
            }
            k => return Err(bad(format!("layer `{name}` has unknown kind {k}"))),
        };
        let at = g
            .inputs
            .iter()
            .position(|v| v.name == name)
            .ok_or_else(|| bad(format!("layer `{name}` is not a placeholder of the graph")))?;
        let want: Vec<Dim> = w.shape().iter().map(|&d| Dim::Fixed(d)).collect();
        if g.inputs[at].shape != want {
            return Err(bad(format!(
                "layer `{name}` does not have the graph's shape"
            )));
        }
        g.inputs.remove(at);
        g.weights.insert(name, w);
    }
    if r.rest() != 0 {
        return Err(bad(format!("{} trailing bytes", r.rest())));
    }
    if g.inputs.is_empty() {
        return Err(bad("the graph has no input left"));
    }
    g.validate()?;
    g.infer_shapes(1)?;
    Ok((g, layers))
}

/// Decodes a container into a validated graph with every weight restored.
pub fn decode(bytes: &[u8]) -> Result<Graph> {
    decode_layers(bytes).map(|(g, _)| g)
}

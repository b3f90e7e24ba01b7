//! Canonical Huffman coding of small-alphabet symbol streams (weight-sharing indices and sparse
//! position gaps), plus the fixed-width packing it is compared against.
//!
//! A coded stream is laid out as (integers little-endian):
//! `count: u32`, then when `count > 0`: code lengths, one nibble per symbol of the alphabet
//! (`ceil(alphabet / 2)` bytes, low nibble first, 0 = symbol unused), `nbytes: u32`, and `nbytes`
//! bytes of codes, most significant bit first. Codes are canonical (shorter codes first, then by
//! symbol) and at most [`MAX_CODE_LEN`] bits long. A stream with one distinct symbol gives it a
//! 1-bit code.
//!
//! Decoder limits: `count` must not exceed the caller's `max_count` nor `8 · nbytes` (every
//! symbol takes at least one bit), so no allocation follows an unchecked size; over-subscribed
//! code lengths, codes that are not in the table, and truncated input are errors.

use crate::{Error, Result};

/// Longest code the encoder produces and the decoder accepts.
pub const MAX_CODE_LEN: u8 = 15;

fn bad(detail: impl Into<String>) -> Error {
    Error::Decode {
        what: "huffman stream",
        detail: detail.into(),
    }
}

/// Code length of every symbol of `alphabet` for the given counts, limited to
/// [`MAX_CODE_LEN`] bits (by halving the counts and rebuilding until it fits). Deterministic:
/// ties are broken by symbol order.
pub fn code_lengths(freq: &[u64]) -> Vec<u8> {
    let mut f: Vec<u64> = freq.to_vec();
    loop {
        let lens = build_lengths(&f);
        if lens.iter().all(|&l| l <= MAX_CODE_LEN) {
            return lens;
        }
        f.iter_mut()
            .filter(|v| **v > 0)
            .for_each(|v| *v = (*v / 2).max(1));
    }
}

fn build_lengths(freq: &[u64]) -> Vec<u8> {
    let mut lens = vec![0u8; freq.len()];
    let used: Vec<usize> = (0..freq.len()).filter(|&s| freq[s] > 0).collect();
    match used.len() {
        0 => return lens,
        1 => {
            lens[used[0]] = 1;
            return lens;
        }
        _ => {}
    }
    // Nodes: leaves 0..m, internal nodes after. parent[] gives depth.
    let m = used.len();
    let mut weight: Vec<u64> = used.iter().map(|&s| freq[s]).collect();
    let mut parent: Vec<usize> = vec![usize::MAX; m];
    // Deterministic priority queue: (weight, id) ordered; ids are unique.
    let mut heap: std::collections::BTreeSet<(u64, usize)> =
        (0..m).map(|i| (weight[i], i)).collect();
    while heap.len() > 1 {
        let a = heap.pop_first().unwrap_or_default();
        let b = heap.pop_first().unwrap_or_default();
        let id = weight.len();
        weight.push(a.0 + b.0);
        parent.push(usize::MAX);
        parent[a.1] = id;
        parent[b.1] = id;
        heap.insert((a.0 + b.0, id));
    }
    for (i, &s) in used.iter().enumerate() {
        let (mut d, mut k) = (0u32, i);
        while parent[k] != usize::MAX {
            d += 1;
            k = parent[k];
        }
        lens[s] = d.min(255) as u8;
    }
    lens
}

/// Canonical codes for the given lengths (`code[s]` holds the `lens[s]` low bits).
fn canonical_codes(lens: &[u8]) -> Vec<u32> {
    let mut count = [0u32; MAX_CODE_LEN as usize + 1];
    lens.iter()
        .filter(|&&l| l > 0)
        .for_each(|&l| count[l as usize] += 1);
    let mut next = [0u32; MAX_CODE_LEN as usize + 2];
    let mut code = 0u32;
    for l in 1..=MAX_CODE_LEN as usize {
        code = (code + count[l - 1]) << 1;
        next[l] = code;
    }
    lens.iter()
        .map(|&l| {
            if l == 0 {
                0
            } else {
                let c = next[l as usize];
                next[l as usize] += 1;
                c
            }
        })
        .collect()
}

struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    fn put(&mut self, code: u32, len: u8) {
        self.acc = (self.acc << len) | u64::from(code);
        self.n += u32::from(len);
        while self.n >= 8 {
            self.n -= 8;
            self.out.push((self.acc >> self.n) as u8);
        }
        self.acc &= (1u64 << self.n) - 1;
    }
    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push((self.acc << (8 - self.n)) as u8);
        }
        self.out
    }
}

/// Byte counts of one coded stream: the header and code-length table, and the coded data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamBytes {
    /// `count`, the code-length table and `nbytes` (or the fixed-width header).
    pub table: usize,
    /// The coded symbols.
    pub data: usize,
}

fn check_alphabet(alphabet: usize) -> Result<()> {
    if !(1..=256).contains(&alphabet) {
        return Err(Error::Invalid(format!(
            "huffman alphabet of {alphabet} symbols (1..=256)"
        )));
    }
    Ok(())
}

/// Appends the Huffman-coded `symbols` (each `< alphabet`, `alphabet ≤ 256`) to `out`.
pub fn encode_into(out: &mut Vec<u8>, symbols: &[u8], alphabet: usize) -> Result<StreamBytes> {
    check_alphabet(alphabet)?;
    let count = u32::try_from(symbols.len()).map_err(|_| Error::Limit {
        what: "huffman symbol count",
        got: symbols.len() as u64,
        limit: u32::MAX as u64,
    })?;
    let start = out.len();
    out.extend_from_slice(&count.to_le_bytes());
    if count == 0 {
        return Ok(StreamBytes { table: 4, data: 0 });
    }
    let mut freq = vec![0u64; alphabet];
    for &s in symbols {
        *freq.get_mut(s as usize).ok_or_else(|| {
            Error::Invalid(format!("symbol {s} outside an alphabet of {alphabet}"))
        })? += 1;
    }
    let lens = code_lengths(&freq);
    let codes = canonical_codes(&lens);
    for pair in lens.chunks(2) {
        out.push(pair[0] | (pair.get(1).copied().unwrap_or(0) << 4));
    }
    let mut w = BitWriter {
        out: Vec::new(),
        acc: 0,
        n: 0,
    };
    for &s in symbols {
        w.put(codes[s as usize], lens[s as usize]);
    }
    let data = w.finish();
    let nbytes = u32::try_from(data.len()).map_err(|_| Error::Limit {
        what: "huffman stream bytes",
        got: data.len() as u64,
        limit: u32::MAX as u64,
    })?;
    out.extend_from_slice(&nbytes.to_le_bytes());
    let table = out.len() - start;
    out.extend_from_slice(&data);
    Ok(StreamBytes {
        table,
        data: data.len(),
    })
}

/// Huffman-codes `symbols` into a fresh buffer (see [`encode_into`]).
pub fn encode(symbols: &[u8], alphabet: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_into(&mut out, symbols, alphabet)?;
    Ok(out)
}

/// A bounds-checked little-endian reader over a byte slice.
pub(crate) struct Reader<'a> {
    pub(crate) b: &'a [u8],
    pub(crate) at: usize,
    pub(crate) what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8], what: &'static str) -> Self {
        Reader { b, at: 0, what }
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or_else(|| Error::Decode {
            what: self.what,
            detail: format!("truncated: {n} bytes wanted at offset {}", self.at),
        })?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    pub(crate) fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_bits(self.u32()?))
    }
    pub(crate) fn rest(&self) -> usize {
        self.b.len() - self.at
    }
}

/// Decodes one stream written by [`encode_into`] at the reader's position. Errors when the
/// stream holds more than `max_count` symbols, a symbol `≥ alphabet`, or is corrupt.
pub(crate) fn decode_from(r: &mut Reader, alphabet: usize, max_count: usize) -> Result<Vec<u8>> {
    check_alphabet(alphabet)?;
    let count = r.u32()? as usize;
    if count == 0 {
        return Ok(Vec::new());
    }
    if count > max_count {
        return Err(bad(format!(
            "{count} symbols, at most {max_count} expected"
        )));
    }
    let table = r.take(alphabet.div_ceil(2))?;
    let lens: Vec<u8> = (0..alphabet)
        .map(|s| (table[s / 2] >> (4 * (s % 2))) & 0x0f)
        .collect();
    let mut counts = [0u32; MAX_CODE_LEN as usize + 1];
    lens.iter().for_each(|&l| counts[l as usize] += 1);
    counts[0] = 0;
    // Kraft: reject over-subscribed tables (incomplete ones are fine; unused codes error).
    let mut left: i64 = 1;
    for &c in counts.iter().skip(1) {
        left = left * 2 - i64::from(c);
        if left < 0 {
            return Err(bad("over-subscribed code lengths"));
        }
    }
    if counts.iter().all(|&c| c == 0) {
        return Err(bad("no symbol has a code"));
    }
    // Symbols sorted by (length, symbol): canonical order.
    let mut sorted: Vec<u8> = (0..alphabet)
        .filter(|&s| lens[s] > 0)
        .map(|s| s as u8)
        .collect();
    sorted.sort_by_key(|&s| lens[s as usize]);
    let nbytes = r.u32()? as usize;
    if count > nbytes.saturating_mul(8) {
        return Err(bad(format!("{count} symbols cannot fit in {nbytes} bytes")));
    }
    let data = r.take(nbytes)?;
    let mut out = Vec::with_capacity(count);
    let (mut byte, mut bit) = (0usize, 0u32);
    for _ in 0..count {
        // Canonical decoding, one bit at a time (as in zlib's puff).
        let (mut code, mut first, mut index) = (0i64, 0i64, 0i64);
        let mut found = None;
        for &c in counts.iter().skip(1) {
            let b = data
                .get(byte)
                .ok_or_else(|| bad("the coded data ends inside a symbol"))?;
            code |= i64::from((b >> (7 - bit)) & 1);
            bit += 1;
            if bit == 8 {
                bit = 0;
                byte += 1;
            }
            let c = i64::from(c);
            if code - c < first {
                found = Some((index + code - first) as usize);
                break;
            }
            index += c;
            first = (first + c) << 1;
            code <<= 1;
        }
        let k = found.ok_or_else(|| bad("a code that is not in the table"))?;
        out.push(sorted[k]);
    }
    Ok(out)
}

/// Decodes a whole buffer written by [`encode`]; trailing bytes are an error.
pub fn decode(bytes: &[u8], alphabet: usize, max_count: usize) -> Result<Vec<u8>> {
    let mut r = Reader::new(bytes, "huffman stream");
    let out = decode_from(&mut r, alphabet, max_count)?;
    if r.rest() != 0 {
        return Err(bad(format!("{} trailing bytes", r.rest())));
    }
    Ok(out)
}

/// Appends `count: u32` and the symbols packed `bits` (1..=8) at a time, MSB first.
pub fn pack_into(out: &mut Vec<u8>, symbols: &[u8], bits: u8) -> Result<StreamBytes> {
    if !(1..=8).contains(&bits) {
        return Err(Error::Invalid(format!("{bits}-bit packing (1..=8)")));
    }
    let count = u32::try_from(symbols.len()).map_err(|_| Error::Limit {
        what: "packed symbol count",
        got: symbols.len() as u64,
        limit: u32::MAX as u64,
    })?;
    out.extend_from_slice(&count.to_le_bytes());
    let mut w = BitWriter {
        out: Vec::new(),
        acc: 0,
        n: 0,
    };
    for &s in symbols {
        if bits < 8 && s >> bits != 0 {
            return Err(Error::Invalid(format!(
                "symbol {s} does not fit {bits} bits"
            )));
        }
        w.put(u32::from(s), bits);
    }
    let data = w.finish();
    let n = data.len();
    out.extend_from_slice(&data);
    Ok(StreamBytes { table: 4, data: n })
}

/// Reads a stream written by [`pack_into`] (at most `max_count` symbols).
pub(crate) fn unpack_from(r: &mut Reader, bits: u8, max_count: usize) -> Result<Vec<u8>> {
    if !(1..=8).contains(&bits) {
        return Err(bad(format!("{bits}-bit packing")));
    }
    let count = r.u32()? as usize;
    if count > max_count {
        return Err(bad(format!(
            "{count} symbols, at most {max_count} expected"
        )));
    }
    let nbytes = (count as u64 * u64::from(bits)).div_ceil(8) as usize;
    let data = r.take(nbytes)?;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let mut v = 0u8;
        for k in 0..bits as usize {
            let p = i * bits as usize + k;
            v = (v << 1) | ((data[p / 8] >> (7 - p % 8)) & 1);
        }
        out.push(v);
    }
    Ok(out)
}

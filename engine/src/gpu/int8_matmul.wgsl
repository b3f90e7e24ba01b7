// int8 matrix product with exact i32 sums: C[r, c] = sum_k (A[r, k] - za) * (B[k, c] - zb).
// A is packed row by row and B column by column (B transposed), 4 signed bytes per u32, each
// row padded to whole words with the operand's zero point (so padding adds nothing). The bytes
// are unpacked by shifts (no packed-dot builtin, so every WebGPU implementation accepts it).

struct Params {
    m: u32,
    n: u32,
    // u32 words per packed row of A and per packed column of B.
    words: u32,
    a_zero: i32,
    b_zero: i32,
}

@group(0) @binding(0) var<storage, read> a: array<u32>;
@group(0) @binding(1) var<storage, read> b: array<u32>;
@group(0) @binding(2) var<storage, read_write> c: array<i32>;
@group(0) @binding(3) var<uniform> p: Params;

// Byte j (0 = lowest) of w as a signed value.
fn byte_at(w: u32, j: u32) -> i32 {
    return bitcast<i32>(w << (24u - 8u * j)) >> 24u;
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    let row = gid.y;
    if (row >= p.m || col >= p.n) {
        return;
    }
    var acc = 0i;
    let ra = row * p.words;
    let rb = col * p.words;
    for (var i = 0u; i < p.words; i++) {
        let wa = a[ra + i];
        let wb = b[rb + i];
        for (var j = 0u; j < 4u; j++) {
            acc += (byte_at(wa, j) - p.a_zero) * (byte_at(wb, j) - p.b_zero);
        }
    }
    c[row * p.n + col] = acc;
}

// f32 matrix product, batched: C[b] = alpha * op(A[b]) * op(B[b]) + beta * bias, then an
// optional ReLU. Each workgroup of 16x16 threads computes a 64x64 tile of C, each thread a 4x4
// block, staging 16-deep slices of A and B in workgroup memory. Loads past the edges read 0;
// stores past them are skipped, so any M, N, K (including 1 and odd sizes) work.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    trans_a: u32,
    trans_b: u32,
    alpha: f32,
    beta: f32,
    has_bias: u32,
    // bias[r * bias_rs + c * bias_cs]: strides 0 broadcast a row, a column or a scalar.
    bias_rs: u32,
    bias_cs: u32,
    // Elements between consecutive batch matrices (0 = the same matrix for every batch).
    stride_a: u32,
    stride_b: u32,
    relu: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

const TS: u32 = 64u;
const BK: u32 = 16u;

var<workgroup> ta: array<f32, 1024>; // [BK][TS]: ta[kk * TS + row]
var<workgroup> tb: array<f32, 1024>; // [BK][TS]: tb[kk * TS + col]

fn load_a(off: u32, r: u32, kk: u32) -> f32 {
    if (r >= p.m || kk >= p.k) {
        return 0.0;
    }
    if (p.trans_a != 0u) {
        return a[off + kk * p.m + r];
    }
    return a[off + r * p.k + kk];
}

fn load_b(off: u32, col: u32, kk: u32) -> f32 {
    if (col >= p.n || kk >= p.k) {
        return 0.0;
    }
    if (p.trans_b != 0u) {
        return b[off + col * p.k + kk];
    }
    return b[off + kk * p.n + col];
}

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let row0 = wg.y * TS;
    let col0 = wg.x * TS;
    let off_a = wg.z * p.stride_a;
    let off_b = wg.z * p.stride_b;
    let tid = lid.y * 16u + lid.x;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }
    let tiles = (p.k + BK - 1u) / BK;
    for (var t = 0u; t < tiles; t++) {
        let k0 = t * BK;
        for (var i = 0u; i < 4u; i++) {
            let e = tid + i * 256u;
            let r = e % TS;
            let kk = e / TS;
            ta[kk * TS + r] = load_a(off_a, row0 + r, k0 + kk);
            tb[kk * TS + r] = load_b(off_b, col0 + r, k0 + kk);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                av[i] = ta[kk * TS + lid.y * 4u + i];
                bv[i] = tb[kk * TS + lid.x * 4u + i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(av[i], bv[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    let off_c = wg.z * p.m * p.n;
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + lid.y * 4u + i;
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + lid.x * 4u + j;
            if (r < p.m && col < p.n) {
                var v = p.alpha * acc[i * 4u + j];
                if (p.has_bias != 0u) {
                    v += p.beta * bias[r * p.bias_rs + col * p.bias_cs];
                }
                if (p.relu != 0u) {
                    v = max(v, 0.0);
                }
                c[off_c + r * p.n + col] = v;
            }
        }
    }
}

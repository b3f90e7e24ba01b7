// Direct 2-D convolution, NCHW, weights [M, C/groups, KH, KW]: one thread per output element,
// with stride, zero padding, dilation and groups (groups == C is depthwise). Optional bias and
// fused ReLU.

struct Params {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    m: u32,
    kh: u32,
    kw: u32,
    oh: u32,
    ow: u32,
    pad_top: u32,
    pad_left: u32,
    stride_h: u32,
    stride_w: u32,
    dil_h: u32,
    dil_w: u32,
    groups: u32,
    has_bias: u32,
    relu: u32,
    total: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> wt: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(64, 1, 1)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let idx = gid.x + gid.y * groups.x * 64u;
    if (idx >= p.total) {
        return;
    }
    let ox = idx % p.ow;
    var t = idx / p.ow;
    let oy = t % p.oh;
    t = t / p.oh;
    let mo = t % p.m;
    let b = t / p.m;
    let cg = p.c / p.groups;
    let g = mo / (p.m / p.groups);
    var acc = 0.0;
    for (var ci = 0u; ci < cg; ci++) {
        let xbase = (b * p.c + g * cg + ci) * p.h * p.w;
        let wbase = (mo * cg + ci) * p.kh * p.kw;
        for (var ky = 0u; ky < p.kh; ky++) {
            let iy = i32(oy * p.stride_h + ky * p.dil_h) - i32(p.pad_top);
            if (iy < 0 || iy >= i32(p.h)) {
                continue;
            }
            for (var kx = 0u; kx < p.kw; kx++) {
                let ix = i32(ox * p.stride_w + kx * p.dil_w) - i32(p.pad_left);
                if (ix < 0 || ix >= i32(p.w)) {
                    continue;
                }
                acc = fma(x[xbase + u32(iy) * p.w + u32(ix)], wt[wbase + ky * p.kw + kx], acc);
            }
        }
    }
    if (p.has_bias != 0u) {
        acc += bias[mo];
    }
    if (p.relu != 0u) {
        acc = max(acc, 0.0);
    }
    y[idx] = acc;
}

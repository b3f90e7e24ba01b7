// Max and average pooling, NCHW: one thread per output element. Max pooling honours dilation
// and yields 0 for a window that covers only padding; average pooling divides by the in-input
// count, or with count_include_pad by the count inside the padded input (never past it).

struct Params {
    nc: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    stride_h: u32,
    stride_w: u32,
    dil_h: u32,
    dil_w: u32,
    pad_top: u32,
    pad_left: u32,
    pad_bottom: u32,
    pad_right: u32,
    is_max: u32,
    count_include_pad: u32,
    total: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

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
    let t = idx / p.ow;
    let oy = t % p.oh;
    let nc = t / p.oh;
    let base = nc * p.h * p.w;
    if (p.is_max != 0u) {
        var best = 0.0;
        var found = false;
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
                let v = x[base + u32(iy) * p.w + u32(ix)];
                if (!found || v > best) {
                    best = v;
                    found = true;
                }
            }
        }
        y[idx] = best;
        return;
    }
    let y0 = i32(oy * p.stride_h) - i32(p.pad_top);
    let x0 = i32(ox * p.stride_w) - i32(p.pad_left);
    let y1 = y0 + i32(p.kh);
    let x1 = x0 + i32(p.kw);
    let ys = clamp(y0, 0, i32(p.h));
    let ye = clamp(y1, 0, i32(p.h));
    let xs = clamp(x0, 0, i32(p.w));
    let xe = clamp(x1, 0, i32(p.w));
    var s = 0.0;
    for (var iy = ys; iy < ye; iy++) {
        for (var ix = xs; ix < xe; ix++) {
            s += x[base + u32(iy) * p.w + u32(ix)];
        }
    }
    var div: i32;
    if (p.count_include_pad != 0u) {
        let ph = max(min(y1, i32(p.h + p.pad_bottom)) - max(y0, -i32(p.pad_top)), 0);
        let pw = max(min(x1, i32(p.w + p.pad_right)) - max(x0, -i32(p.pad_left)), 0);
        div = ph * pw;
    } else {
        div = (ye - ys) * (xe - xs);
    }
    y[idx] = s / f32(max(div, 1));
}

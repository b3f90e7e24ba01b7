// Elementwise ops. `unary`: y = f(x) for relu, clip, sigmoid, tanh, leaky relu. `binary`:
// y = a (op) b with numpy broadcasting up to rank 6: each operand is read through strides
// that are 0 along its broadcast axes (a bias [C, 1, 1] over [N, C, H, W], a scalar, a row).

struct UnaryParams {
    op: u32,
    total: u32,
    alpha: f32,
    beta: f32,
}

struct BinaryParams {
    op: u32,
    total: u32,
    rank: u32,
    _pad: u32,
    // Output dims, then the strides of `a` and of `b`, innermost last, 4 per vector.
    shape: array<vec4<u32>, 2>,
    stride_a: array<vec4<u32>, 2>,
    stride_b: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<storage, read> ux: array<f32>;
@group(0) @binding(1) var<storage, read_write> uy: array<f32>;
@group(0) @binding(2) var<uniform> up: UnaryParams;

@compute @workgroup_size(64, 1, 1)
fn unary(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let idx = gid.x + gid.y * groups.x * 64u;
    if (idx >= up.total) {
        return;
    }
    let v = ux[idx];
    var r: f32;
    switch up.op {
        case 0u: { r = max(v, 0.0); }
        case 1u: { r = min(max(v, up.alpha), up.beta); }
        case 2u: { r = 1.0 / (1.0 + exp(-v)); }
        case 3u: { r = tanh(v); }
        case 4u: { r = select(up.alpha * v, v, v >= 0.0); }
        default: { r = v; }
    }
    uy[idx] = r;
}

// Bindings of `binary` start at 3 so no two variables of this file share a slot.
@group(0) @binding(3) var<storage, read> ba: array<f32>;
@group(0) @binding(4) var<storage, read> bb: array<f32>;
@group(0) @binding(5) var<storage, read_write> by: array<f32>;
@group(0) @binding(6) var<uniform> bp: BinaryParams;

@compute @workgroup_size(64, 1, 1)
fn binary(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let idx = gid.x + gid.y * groups.x * 64u;
    if (idx >= bp.total) {
        return;
    }
    var rest = idx;
    var ia = 0u;
    var ib = 0u;
    for (var d = 0u; d < bp.rank; d++) {
        let axis = bp.rank - 1u - d;
        let dim = bp.shape[axis / 4u][axis % 4u];
        let i = rest % dim;
        rest = rest / dim;
        ia += i * bp.stride_a[axis / 4u][axis % 4u];
        ib += i * bp.stride_b[axis / 4u][axis % 4u];
    }
    let a = ba[ia];
    let b = bb[ib];
    var r: f32;
    switch bp.op {
        case 0u: { r = a + b; }
        case 1u: { r = a - b; }
        case 2u: { r = a * b; }
        default: { r = a / b; }
    }
    by[idx] = r;
}

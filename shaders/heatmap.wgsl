// Draws one attention matrix as a heatmap: the head view's full matrix and each cell of the
// head overview. The matrix is read straight from a storage buffer; when a pixel covers several
// tokens (a thumbnail), it shows the largest weight under it, so a sharp one-token head stays
// visible at any size.

struct Params {
    // The drawing's rectangle in framebuffer pixels: x, y, width, height (unclipped, so a
    // partly scrolled-away cell keeps its geometry).
    rect_px: vec4<f32>,
    // The visible part of the matrix in visible-token units: first column, first row, columns, rows.
    window: vec4<f32>,
    // Side of the stored matrix.
    side: u32,
    // How many tokens are visible (the length of `tokens`).
    visible: u32,
    // 0 = linear, 1 = log10.
    log_scale: u32,
    // Which colour map in `lut` (256 entries each).
    colormap: u32,
    // The weight drawn with the top colour.
    vmax: f32,
    // Log scale: log10 of the weight drawn with the bottom colour.
    log_floor: f32,
    // Index of the matrix's first value in `weights` (a head inside its layer's buffer, when
    // drawing from the compute's own buffer).
    first: u32,
    _pad1: f32,
};

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> lut: array<vec4<f32>>;
@group(1) @binding(0) var<storage, read> weights: array<f32>;
// Visible token index -> stored row/column (hides special tokens without a copy).
@group(1) @binding(1) var<storage, read> tokens: array<u32>;

struct VertexOut {
    @builtin(position) position: vec4<f32>,
};

@vertex
fn vs_main(@builtin(vertex_index) index: u32) -> VertexOut {
    // One triangle that covers the whole viewport (egui sets it to the callback's rectangle).
    var corners = array<vec2<f32>, 3>(vec2(-1.0, -1.0), vec2(3.0, -1.0), vec2(-1.0, 3.0));
    var out: VertexOut;
    out.position = vec4(corners[index], 0.0, 1.0);
    return out;
}

fn weight_at(row: u32, col: u32) -> f32 {
    return weights[params.first + tokens[row] * params.side + tokens[col]];
}

fn colour(w: f32) -> vec4<f32> {
    var t: f32;
    if params.log_scale == 1u {
        let l = log(max(w, 1e-30)) / log(10.0);
        t = clamp((l - params.log_floor) / (log(params.vmax) / log(10.0) - params.log_floor), 0.0, 1.0);
    } else {
        t = clamp(w / params.vmax, 0.0, 1.0);
    }
    let index = params.colormap * 256u + u32(round(t * 255.0));
    return lut[index];
}

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    let uv = (in.position.xy - params.rect_px.xy) / params.rect_px.zw;
    let col_f = params.window.x + uv.x * params.window.z;
    let row_f = params.window.y + uv.y * params.window.w;
    // Tokens under one pixel, per axis.
    let per_px = vec2(params.window.z / params.rect_px.z, params.window.w / params.rect_px.w);
    let n = f32(params.visible);
    if col_f < 0.0 || row_f < 0.0 || col_f >= n || row_f >= n {
        discard;
    }
    if per_px.x <= 1.0 && per_px.y <= 1.0 {
        return colour(weight_at(u32(row_f), u32(col_f)));
    }
    // Max-pool the pixel's footprint with at most 8 x 8 reads.
    let lo = vec2(col_f, row_f) - 0.5 * max(per_px, vec2(1.0));
    let span = max(per_px, vec2(1.0));
    let steps = vec2<u32>(min(ceil(span), vec2(8.0)));
    var best = 0.0;
    for (var sy = 0u; sy < steps.y; sy++) {
        let r = clamp(lo.y + (f32(sy) + 0.5) * span.y / f32(steps.y), 0.0, n - 1.0);
        for (var sx = 0u; sx < steps.x; sx++) {
            let c = clamp(lo.x + (f32(sx) + 0.5) * span.x / f32(steps.x), 0.0, n - 1.0);
            best = max(best, weight_at(u32(r), u32(c)));
        }
    }
    return colour(best);
}

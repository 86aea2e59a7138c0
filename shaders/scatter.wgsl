// Draws a query-key scatter: one instanced quad per point, read from storage buffers that hold
// every point's position (x, y, z; z is 0 in 2D), colour (RGBA8) and size factor. The points of
// the matrix view's cells and of the single view come from the same buffers.

struct Params {
    // Data coordinates -> the drawing rectangle's clip space (x right, y up, w for perspective).
    transform: mat4x4<f32>,
    // The drawing's rectangle in framebuffer pixels: x, y, width, height (unclipped).
    rect_px: vec4<f32>,
    // The viewport egui set for this callback (the rectangle clipped), in framebuffer pixels.
    viewport_px: vec4<f32>,
    // A point's diameter in framebuffer pixels at size factor 1.
    point_px: f32,
    _pad0: f32,
    _pad1: f32,
    _pad2: f32,
};

@group(0) @binding(0) var<uniform> params: Params;
@group(1) @binding(0) var<storage, read> positions: array<f32>;
@group(1) @binding(1) var<storage, read> colours: array<u32>;
@group(1) @binding(2) var<storage, read> sizes: array<f32>;

struct VertexOut {
    @builtin(position) position: vec4<f32>,
    // The corner of the quad, -1..1, for the round cut-out.
    @location(0) corner: vec2<f32>,
    @location(1) colour: vec4<f32>,
};

@vertex
fn vs_main(@builtin(vertex_index) vertex: u32, @builtin(instance_index) point: u32) -> VertexOut {
    // A triangle strip of four corners per point: two thirds of the vertex work of a list.
    var corners = array<vec2<f32>, 4>(
        vec2(-1.0, -1.0), vec2(1.0, -1.0), vec2(-1.0, 1.0), vec2(1.0, 1.0),
    );
    let p = vec4(positions[3u * point], positions[3u * point + 1u], positions[3u * point + 2u], 1.0);
    let clip = params.transform * p;
    var out: VertexOut;
    let corner = corners[vertex];
    out.corner = corner;
    out.colour = unpack4x8unorm(colours[point]);
    let size = params.point_px * sizes[point];
    if clip.w <= 0.0 || size <= 0.0 || out.colour.a <= 0.0 {
        // Behind the camera, or hidden: a degenerate quad.
        out.position = vec4(2.0, 2.0, 0.0, 1.0);
        return out;
    }
    let ndc = clip.xy / clip.w;
    let px = params.rect_px.xy + (ndc * vec2(0.5, -0.5) + 0.5) * params.rect_px.zw
        + corner * 0.5 * max(size, 1.0);
    let v = (px - params.viewport_px.xy) / params.viewport_px.zw * 2.0 - 1.0;
    out.position = vec4(v.x, -v.y, 0.0, 1.0);
    return out;
}

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    let r = length(in.corner);
    if r > 1.0 {
        discard;
    }
    // A soft rim, so dense clouds read as density rather than a solid blot.
    let edge = 1.0 - smoothstep(0.8, 1.0, r);
    // egui blends premultiplied colours.
    let alpha = in.colour.a * edge;
    return vec4(in.colour.rgb * alpha, alpha);
}

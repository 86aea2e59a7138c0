//! `headwise render`: views drawn offscreen by the window's shaders, read back pixel by pixel.

use headwise::render::colormap::ColorMap;
use headwise_engine::session::Session;
use headwise_tests::pixels::{decode_heatmap, grid_bands, heatmap_box, map_mask};
use headwise_tests::{
    assert_clean_failure, headwise, render, scratch, traced_session, truncated_copy,
};

const PROMPT: &str = "the quick brown fox jumps over the lazy dog";

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn a_rendered_head_decodes_back_to_that_heads_attention() {
    let dir = scratch("render-head");
    let session_path = traced_session(&dir, "tiny-gpt2", &[PROMPT], "tiny.safetensors");
    let session = Session::open(&session_path).unwrap();
    // layers[input][layer]: input 0, layer 1, heads 1 and 2.
    let attn = &session.layers[0][1].attn;
    let t = attn.shape[1];
    let head1 = &attn.data[t * t..2 * t * t];
    let head2 = &attn.data[2 * t * t..3 * t * t];

    let img = render(&dir, &session_path, "head:1.1", "head.png");
    let mask = map_mask(&img, ColorMap::Viridis);
    let bbox = heatmap_box(&mask);
    let (w, h) = (bbox.2 - bbox.0, bbox.3 - bbox.1);
    assert!(
        w > 200 && (w as i64 - h as i64).abs() <= 2,
        "heatmap box {bbox:?}"
    );
    let decoded = decode_heatmap(&img, bbox, t, ColorMap::Viridis);
    // One step of the 256-entry table, plus ties between neighbouring entries.
    let error = max_diff(&decoded, head1);
    assert!(error <= 2.5 / 255.0, "decoded weights differ by {error}");
    // And it is that head's picture, not any head's.
    assert!(max_diff(head1, head2) > 0.05);
    assert!(max_diff(&decoded, head2) > 0.05);
}

#[test]
fn the_rendered_overview_shows_a_cell_per_head_of_every_layer() {
    let dir = scratch("render-overview");
    let session_path = traced_session(&dir, "tiny-gpt2", &[PROMPT], "tiny.safetensors");
    let img = render(&dir, &session_path, "overview", "overview.png");
    let (row_bands, col_bands) = grid_bands(&map_mask(&img, ColorMap::Viridis));
    assert_eq!(
        row_bands.len(),
        2,
        "one band of cells per layer: {row_bands:?}"
    );
    assert_eq!(
        col_bands.len(),
        4,
        "one column of cells per head: {col_bands:?}"
    );
}

#[test]
fn rendering_a_head_that_does_not_exist_names_the_model_shape() {
    let dir = scratch("render-bad-head");
    let session_path = traced_session(&dir, "tiny-gpt2", &[PROMPT], "tiny.safetensors");
    let png = dir.join("x.png");
    let out = headwise(
        &[
            "render",
            session_path.to_str().unwrap(),
            "--view",
            "head:9.0",
            "--out",
            png.to_str().unwrap(),
        ],
        &dir,
    );
    assert_clean_failure(&out, &["head:9.0", "2 layers x 4 heads"]);
    assert!(!png.exists());
}

#[test]
fn rendering_a_corrupt_session_is_a_clear_error() {
    let dir = scratch("render-corrupt");
    let session_path = traced_session(&dir, "tiny-gpt2", &[PROMPT], "tiny.safetensors");
    let broken = truncated_copy(&session_path, 1, 2, &dir, "broken.safetensors");
    let out = headwise(
        &[
            "render",
            broken.to_str().unwrap(),
            "--view",
            "overview",
            "--out",
            dir.join("x.png").to_str().unwrap(),
        ],
        &dir,
    );
    assert_clean_failure(&out, &["broken.safetensors"]);
}

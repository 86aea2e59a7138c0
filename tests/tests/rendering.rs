//! `headwise render`: views drawn offscreen by the window's shaders, read back pixel by pixel.

use headwise::render::colormap::ColorMap;
use headwise_engine::session::Session;
use headwise_tests::Materialised;
use headwise_tests::pixels::{decode_heatmap, grid_bands, heatmap_box, map_mask};
use headwise_tests::{
    assert_clean_failure, headwise, render, scratch, traced_session, truncated_copy, wgpu_device,
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
    if wgpu_device().is_none() {
        return;
    }
    let dir = scratch("render-head");
    let session_path = traced_session(&dir, "tiny-gpt2", &[PROMPT], "tiny.safetensors");
    let session = Session::open(&session_path).unwrap();
    // layers[input][layer]: input 0, layer 1, heads 1 and 2.
    let attn = session.layers[0][1].full();
    let t = attn.shape[1];
    let head1 = &attn.data[t * t..2 * t * t];
    let head2 = &attn.data[2 * t * t..3 * t * t];

    // The fixture's two heads differ, so a picture of one cannot pass for the other.
    assert!(
        max_diff(head1, head2) > 0.05,
        "precondition: the heads differ"
    );
    for (view, expected, other) in [("head:1.1", head1, head2), ("head:1.2", head2, head1)] {
        let img = render(&dir, &session_path, view, "head.png");
        let mask = map_mask(&img, ColorMap::Viridis);
        let bbox = heatmap_box(&mask);
        let (w, h) = (bbox.2 - bbox.0, bbox.3 - bbox.1);
        assert!(
            w > 200 && (w as i64 - h as i64).abs() <= 2,
            "{view}: heatmap box {bbox:?}"
        );
        let decoded = decode_heatmap(&img, bbox, t, ColorMap::Viridis);
        // One step of the 256-entry table, plus ties between neighbouring entries.
        let error = max_diff(&decoded, expected);
        assert!(
            error <= 2.5 / 255.0,
            "{view}: decoded weights differ by {error}"
        );
        // And it is that head's picture, not the other's.
        assert!(max_diff(&decoded, other) > 0.05, "{view}");
    }
}

#[test]
fn the_rendered_overview_shows_a_cell_per_head_of_every_layer() {
    if wgpu_device().is_none() {
        return;
    }
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

/// A headless command on a machine without a display session prints only what it has to say.
#[test]
fn rendering_without_a_display_session_prints_no_display_server_errors() {
    if wgpu_device().is_none() {
        return;
    }
    let dir = scratch("render-no-display");
    let session_path = traced_session(&dir, "tiny-gpt2", &[PROMPT], "tiny.safetensors");
    let png = dir.join("head.png");
    let out = std::process::Command::new(headwise_tests::headwise_bin())
        .args([
            "render",
            session_path.to_str().unwrap(),
            "--view",
            "head:1.1",
        ])
        .args(["--out", png.to_str().unwrap()])
        .env("HEADWISE_HOME", &dir)
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("NODEVICE_SELECT")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("XDG_RUNTIME_DIR"), "{stderr}");
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [format!("wrote {} (900x940)", png.display())],
        "stderr is the one line saying what was written"
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

/// After a run on the GPU, the views draw each head from the buffer burn computed it in, and
/// the picture is exactly the one drawn from the session's host copy.
#[test]
fn heads_drawn_in_place_from_a_gpu_run_equal_heads_drawn_from_the_session_copy() {
    use headwise::document::{Document, device_attention};
    use headwise::render::offscreen::Offscreen;
    use headwise::views::render as render_view;
    use headwise::views::state::{Tab, ViewState};
    use headwise_engine::device::shared_wgpu_setup;
    use headwise_engine::{LongInput, Model, TokenInput};
    use headwise_tests::fixture;
    use std::sync::Arc;
    let Some(gpu) = wgpu_device() else {
        return;
    };
    let model = Model::load(&fixture("tiny-gpt2"), &gpu.device, &|_| {}).unwrap();
    let encoded = model.encode(0, PROMPT, LongInput::Reject).unwrap();
    let trace = model.forward(&TokenInput::from(&encoded)).unwrap();
    let session = |trace| {
        let mut s = Session::new(&model, "tiny-gpt2");
        s.push_text(&model, PROMPT, &encoded, trace).unwrap();
        s
    };
    let copied = Arc::new(Document::new(session(&trace)));
    let attention = device_attention(std::slice::from_ref(&trace));
    assert_eq!(attention.len(), 1);
    assert!(
        attention[0].iter().all(Option::is_some),
        "every layer's attention has a GPU buffer"
    );
    let in_place = Arc::new(Document::new(session(&trace)).with_device_attention(attention));
    assert_eq!(in_place.layers_in_place(), in_place.layers());
    // The trace's tensors may go; the buffers stay held by the document.
    drop(trace);

    let t = copied.tokens(0).len();
    let (layer, head) = (1, 2);
    let expected = copied.head(0, layer, head).unwrap().to_vec();
    for tab in [Tab::Head, Tab::Overview] {
        let draw = |doc: &Arc<Document>| {
            let setup = shared_wgpu_setup().expect("the wgpu device the model ran on");
            let mut offscreen =
                Offscreen::new(setup.device, setup.queue, eframe::egui::Visuals::dark());
            let mut view = ViewState {
                tab,
                layer,
                head,
                ..Default::default()
            };
            let size = eframe::egui::vec2(700.0, 700.0);
            let img = render_view(&mut offscreen, doc, &mut view, size, 1.0).unwrap();
            (img, offscreen.heatmap_bytes())
        };
        let (from_copy, (uploaded, none)) = draw(&copied);
        assert!(uploaded > 0 && none == 0, "{tab:?}: the copy is uploaded");
        let (from_gpu, (none, bound)) = draw(&in_place);
        assert!(
            none == 0 && bound > 0,
            "{tab:?}: nothing uploaded, all bound"
        );
        assert_eq!(bound, uploaded, "{tab:?}: the same matrices drawn");
        assert!(
            from_copy == from_gpu,
            "{tab:?}: the in-place picture differs from the uploaded one"
        );
        if tab == Tab::Head {
            let mask = map_mask(&from_gpu, ColorMap::Viridis);
            let decoded = decode_heatmap(&from_gpu, heatmap_box(&mask), t, ColorMap::Viridis);
            let error = max_diff(&decoded, &expected);
            assert!(
                error < 0.01,
                "head {layer}.{head} decodes with error {error}"
            );
        }
    }
}

/// The comparison view draws the same head of two prompts side by side (both halves show a
/// heatmap) and the per-head metric differences below; a session of one input is refused.
#[test]
fn the_comparison_view_draws_two_prompts_side_by_side_and_refuses_a_single_input() {
    let dir = scratch("render-compare");
    let two = traced_session(
        &dir,
        "tiny-llama",
        &[
            PROMPT,
            "the quick brown cat sleeps under the warm sun today",
        ],
        "two.safetensors",
    );
    let img = render(&dir, &two, "compare:1.0", "compare.png");
    let background = img.get_pixel(img.width() - 1, img.height() - 1).0;
    let (w, h) = (img.width(), img.height());
    // The heatmaps' band: below the title and the labels, above the metric grid.
    let coloured = |x0: u32, x1: u32| {
        (x0..x1)
            .flat_map(|x| (h / 8..h / 2).map(move |y| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0 != background)
            .count()
    };
    let (left, right) = (coloured(0, w / 2), coloured(w / 2, w));
    assert!(
        left > 20_000 && right > 20_000,
        "left {left}, right {right}"
    );
    assert!(headwise_tests::distinct_colours(&img) > 50);
    let one = traced_session(&dir, "tiny-llama", &[PROMPT], "one.safetensors");
    let png = dir.join("never.png");
    let out = headwise(
        &[
            "render",
            one.to_str().unwrap(),
            "--view",
            "compare:1.0",
            "--out",
            png.to_str().unwrap(),
        ],
        &dir,
    );
    assert_clean_failure(&out, &["two inputs"]);
}

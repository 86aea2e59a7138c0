//! The real window under Xvfb: it starts, opens a session given on the command line, and a
//! screenshot of it shows the head overview grid; a broken session is reported in the window
//! and on the command line without a panic. Skipped where Xvfb is missing unless
//! HEADWISE_REQUIRE_WINDOW=1 (CI sets it).

use headwise::render::colormap::ColorMap;
use headwise_tests::pixels::{counts, grid_bands, map_mask};
use headwise_tests::{
    assert_success, asset, distinct_colours, fixture, headwise_bin, real_model, required, scratch,
    traced_image_session, traced_session, truncated_copy,
};
use std::path::Path;
use std::process::{Command, Output};

const PROMPT: &str = "the quick brown fox jumps over the lazy dog";

fn xvfb_run() -> Option<&'static str> {
    let found = Command::new("sh")
        .args(["-c", "command -v xvfb-run"])
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        Some("xvfb-run")
    } else if required("HEADWISE_REQUIRE_WINDOW") {
        panic!("HEADWISE_REQUIRE_WINDOW=1 but xvfb-run is not installed");
    } else {
        headwise_tests::skipped("xvfb-run is not installed (apt-get install xvfb xauth)");
        None
    }
}

/// Runs the window on a virtual display until it has saved its screenshot and quit.
fn window(xvfb: &str, args: &[&str], home: &Path) -> Output {
    Command::new("timeout")
        .arg("300")
        .arg(xvfb)
        .args(["-a", "-s", "-screen 0 1400x900x24"])
        .arg(headwise_bin())
        .args(args)
        .env("HEADWISE_HOME", home)
        .output()
        .expect("run the window")
}

/// Opens `session` in the window (with `model` loaded, so it does not fetch the default one)
/// and returns how it ended and the screenshot it saved once the session was on screen.
fn screenshot(
    xvfb: &str,
    dir: &Path,
    session: &Path,
    model: Option<&Path>,
) -> (Output, image::RgbaImage) {
    let shot = dir.join("window.png");
    let mut args = vec![
        session.to_str().unwrap(),
        "--screenshot",
        shot.to_str().unwrap(),
    ];
    if let Some(model) = model {
        args.extend(["--model", model.to_str().unwrap()]);
    }
    let out = window(xvfb, &args, dir);
    let img = image::open(&shot)
        .expect("the window saved a screenshot")
        .to_rgba8();
    (out, img)
}

#[test]
fn the_window_opens_a_session_and_shows_its_head_overview() {
    let Some(xvfb) = xvfb_run() else { return };
    let dir = scratch("window-overview");
    let session = traced_session(&dir, "tiny-gpt2", &[PROMPT], "tiny.safetensors");
    let (out, img) = screenshot(xvfb, &dir, &session, None);
    assert_success(&out);
    assert!(
        img.width() >= 1000 && img.height() >= 600,
        "window is {}x{}",
        img.width(),
        img.height()
    );
    let mask = map_mask(&img, ColorMap::Viridis);
    let (row_bands, col_bands) = grid_bands(&mask);
    assert_eq!(
        row_bands.len(),
        2,
        "a row of thumbnails per layer: {row_bands:?}"
    );
    assert_eq!(
        col_bands.len(),
        4,
        "a column of thumbnails per head: {col_bands:?}"
    );
    // The cells are real thumbnails, not flat blocks: many colours of the map itself (text
    // antialiasing alone would give many colours, but not the map's).
    let distinct: std::collections::HashSet<[u8; 4]> = img
        .enumerate_pixels()
        .filter(|(x, y, _)| mask[*y as usize][*x as usize])
        .map(|(_, _, p)| p.0)
        .collect();
    assert!(distinct.len() > 20, "{} colours of the map", distinct.len());
}

#[test]
fn a_corrupt_session_is_reported_in_the_window_and_on_the_command_line() {
    let Some(xvfb) = xvfb_run() else { return };
    let dir = scratch("window-corrupt");
    let session = traced_session(&dir, "tiny-gpt2", &[PROMPT], "tiny.safetensors");
    let broken = truncated_copy(&session, 1, 3, &dir, "broken.safetensors");
    // The model is named so the window does not go fetching the default one.
    let model = fixture("tiny-gpt2");
    let (out, img) = screenshot(xvfb, &dir, &broken, Some(&model));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("broken.safetensors"),
        "stderr names the file: {stderr}"
    );
    // The window still came up and showed no heatmap.
    let mask = map_mask(&img, ColorMap::Viridis);
    let (rows, _) = counts(&mask);
    assert!(rows.iter().max().copied().unwrap_or(0) < 50);
}

/// Horizontal bands of "busy" rows (many pixels differing from their left neighbour, as in a
/// photograph), with gaps under 12 rows closed: (first row, height).
fn busy_bands(img: &image::RgbaImage, min_changes: usize) -> Vec<(u32, u32)> {
    let mut bands: Vec<(u32, u32)> = Vec::new();
    for y in 0..img.height() {
        let changes = (1..img.width())
            .filter(|&x| img.get_pixel(x, y) != img.get_pixel(x - 1, y))
            .count();
        if changes <= min_changes {
            continue;
        }
        match bands.last_mut() {
            Some((start, height)) if y - (*start + *height) < 12 => *height = y - *start + 1,
            _ => bands.push((y, 1)),
        }
    }
    bands
}

#[test]
fn the_window_shows_a_photograph_under_dinov2_s_patch_heatmaps() {
    let Some(xvfb) = xvfb_run() else { return };
    let Some(model) = real_model("dinov2-s") else {
        return;
    };
    let dir = scratch("window-image");
    let session = traced_image_session(&dir, &model, &asset("chelsea.png"), "cat.safetensors");
    let (out, img) = screenshot(xvfb, &dir, &session, Some(&model));
    assert_success(&out);
    // A photograph under a heatmap: tens of thousands of colours (the text views show a few
    // hundred: the colour map's and antialiased text's).
    let colours = distinct_colours(&img);
    assert!(colours > 10_000, "{colours} colours");
    // The image view opens by itself on a picture: the picture drawn about 520 points wide and
    // as tall, and under it one row of six small overlays, one per head of the layer.
    let bands = busy_bands(&img, 250);
    let main = bands
        .iter()
        .position(|&(_, h)| h >= 450)
        .unwrap_or_else(|| panic!("no picture-sized band of busy rows: {bands:?}"));
    let thumbs = &bands[main + 1..];
    assert!(
        thumbs.iter().any(|&(_, h)| (100..=200).contains(&h)),
        "no row of small overlays under the picture: {bands:?}"
    );
}

#[test]
fn the_window_lays_out_every_heads_queries_and_keys_of_a_corpus() {
    let Some(xvfb) = xvfb_run() else { return };
    let dir = scratch("window-qk");
    let model = fixture("tiny-llama");
    let session = headwise_tests::traced_corpus_session(&dir);
    // The session opens on the query-key view (its saved view state says so); the window lays
    // out every head by PCA itself before the screenshot.
    let mut opened = headwise_engine::session::Session::open(&session).unwrap();
    opened.meta.view = serde_json::json!({"tab": "Qk"});
    opened.save(&session, opened.dtype).unwrap();
    let (out, img) = screenshot(xvfb, &dir, &session, Some(&model));
    assert_success(&out);
    let (green, pink, columns) = headwise_tests::query_key_pixels(&img);
    assert!(
        green > 300 && pink > 300,
        "{green} query and {pink} key pixels"
    );
    // Two layers of four heads: the points spread over the grid's four columns of cells, not
    // one blob.
    assert!(
        columns.len() >= 12,
        "points in {} 20-pixel columns",
        columns.len()
    );
}

/// A long input traced without materialised attention: the window opens it, and the overview's
/// thumbnails (computed from q, k and lse) fill their cells rather than a corner of them.
#[test]
fn the_window_shows_a_long_input_kept_as_q_k_and_lse_with_thumbnails_filling_their_cells() {
    let Some(xvfb) = xvfb_run() else { return };
    let dir = scratch("window-long");
    let model = headwise_tests::fixture_allowing("tiny-llama3", 4096, &dir);
    let text = dir.join("long.txt");
    std::fs::write(&text, PROMPT.repeat(800)).unwrap();
    let session = headwise_tests::trace_to(
        &dir,
        &model,
        &[
            "--text-file",
            text.to_str().unwrap(),
            "--truncate",
            "--attention",
            "none",
        ],
        "long.safetensors",
    );
    let opened = headwise_engine::session::Session::open(&session).unwrap();
    // Past the 256 MiB of attention that opening a session rebuilds.
    assert_eq!(opened.meta.inputs[0].tokens.len(), 4096);
    assert!(opened.layers[0].iter().all(|l| l.attn.is_none()));
    let (out, img) = screenshot(xvfb, &dir, &session, None);
    assert_success(&out);
    let mask = map_mask(&img, ColorMap::Viridis);
    let (row_bands, col_bands) = grid_bands(&mask);
    assert_eq!(
        row_bands.len(),
        2,
        "a row of thumbnails per layer: {row_bands:?}"
    );
    assert_eq!(col_bands.len(), 4, "a column per head: {col_bands:?}");
    // Each thumbnail spans most of the pitch from one cell to the next.
    for bands in [&row_bands, &col_bands] {
        for pair in bands.windows(2) {
            let (width, pitch) = (pair[0].1 - pair[0].0, pair[1].0 - pair[0].0);
            assert!(
                width * 10 >= pitch * 7,
                "a thumbnail {width} px wide in a {pitch} px cell"
            );
        }
    }
}

/// The token panel in the window, on SmolLM2 over a paragraph: its plots draw a line per
/// marked token (the first token's in the first line colour), and the overview coloured by
/// sink share changes when the session's view state asks for value-weighted attention.
#[test]
fn the_window_shows_the_token_panel_and_value_weighted_attention() {
    let Some(xvfb) = xvfb_run() else { return };
    let Some(model) = real_model("smollm2") else {
        return;
    };
    let dir = scratch("window-tokens");
    let paragraph = "The lighthouse stood at the edge of the cliff, and every night its keeper \
                     climbed the stairs to light the lamp.";
    let session = headwise_tests::trace_to(&dir, &model, &["--text", paragraph], "p.safetensors");
    let mut opened = headwise_engine::session::Session::open(&session).unwrap();
    let mut shots = Vec::new();
    for view in [
        serde_json::json!({"tab": "Tokens", "tokens": {"marked": [0, 5]}}),
        serde_json::json!({"tab": "Overview", "overview_mode": {"Metric": "FirstToken"}}),
        serde_json::json!({"tab": "Overview", "overview_mode": {"Metric": "FirstToken"},
                           "value_weighted": true}),
    ] {
        opened.meta.view = view;
        opened.save(&session, opened.dtype).unwrap();
        let (out, img) = screenshot(xvfb, &dir, &session, Some(&model));
        assert_success(&out);
        shots.push(img);
    }
    let count =
        |img: &image::RgbaImage, rgb: [u8; 3]| img.pixels().filter(|p| p.0[..3] == rgb).count();
    assert!(
        count(&shots[0], [255, 120, 80]) > 100,
        "the first token's line"
    );
    assert!(
        count(&shots[0], [90, 170, 255]) > 100,
        "the second marked token's line"
    );
    let changed = shots[1]
        .pixels()
        .zip(shots[2].pixels())
        .filter(|(a, b)| a != b)
        .count();
    assert!(
        changed > 5_000,
        "value weighting changed only {changed} pixels"
    );
}

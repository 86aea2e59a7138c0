//! Edited forward passes equal transformers with hooks (scripts/make_edit_fixtures.py): an
//! ablated head (its slice of the output projection's input zeroed), a mean-ablated one, the
//! attention to a key scaled (a float mask adding ln F to its column) or blocked (F = 0), and
//! two edits at once give the same attention, q, k, lse and next-token probabilities, on the
//! tiny Llama and GPT-2 and on SmolLM2.

// Gradients live in this test binary rather than one of their own: each test binary links
// about 2 GB of dependency debug info into the shared target directory.
mod gradient_checks;

use headwise_engine::device::DeviceChoice;
use headwise_engine::edits::{Edit, parse_all};
use headwise_engine::host::HostTensor;
use headwise_engine::session::LayerTensors;
use headwise_engine::{AttentionCapture, Model, TokenInput};
use headwise_tests::*;
use std::path::Path;

/// The fixture's edited runs: each run's edits, and the token ids of its prompts.
fn runs(folder: &Path) -> (Expected, Vec<Vec<Edit>>, Vec<Vec<u32>>) {
    let expected = Expected::load_file(&folder.join("edits.safetensors"));
    let runs = expected.meta["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|run| {
            let specs: Vec<String> = run
                .as_array()
                .expect("edit strings")
                .iter()
                .map(|s| s.as_str().expect("string").to_string())
                .collect();
            parse_all(&specs).expect("edits parse")
        })
        .collect();
    let ids = expected.token_ids("token_ids");
    (expected, runs, ids)
}

/// Runs every edited run of the fixture on `model` and compares what transformers stored.
fn check_edits(model: &Model, folder: &Path, tolerance: Tolerance) {
    let (expected, runs, ids) = runs(folder);
    assert!(runs.len() >= 5);
    for (r, edits) in runs.iter().enumerate() {
        for (p, ids) in ids.iter().enumerate() {
            let input = TokenInput {
                ids: ids.clone(),
                type_ids: vec![0; ids.len()],
                key_valid: None,
            };
            let trace = model
                .forward_edited(&input, AttentionCapture::Full, edits)
                .expect("edited forward");
            for (l, layer) in trace.layers.iter().enumerate() {
                let ours = LayerTensors::from_trace(layer).unwrap();
                let what = |kind: &str| format!("edit{r} {edits:?} {kind}/{p}/{l}");
                let key = |kind: &str| format!("edit{r}/{kind}/{p}/{l}");
                if let Some(reference) = expected.tensors.get(&key("attn")) {
                    assert_close(
                        &what("attn"),
                        ours.attn.as_ref().unwrap(),
                        reference,
                        tolerance.attn,
                    );
                }
                assert_allclose(
                    &what("lse"),
                    &lse_of(layer),
                    expected.get(&key("lse")),
                    tolerance.qk_atol,
                    tolerance.qk_rtol.max(2e-6),
                );
                for (kind, t) in [("q", &ours.q), ("k", &ours.k)] {
                    if let Some(reference) = expected.tensors.get(&key(kind)) {
                        assert_allclose(
                            &what(kind),
                            t,
                            reference,
                            tolerance.qk_atol,
                            tolerance.qk_rtol,
                        );
                    }
                }
            }
            let probs = trace.next_token_probs.expect("a decoder");
            assert_close(
                &format!("edit{r} {edits:?} next_token_probs/{p}"),
                &HostTensor::new(vec![probs.len()], probs),
                expected.get(&format!("edit{r}/next_token_probs/{p}")),
                tolerance.probs,
            );
        }
    }
}

const TINY: Tolerance = Tolerance {
    attn: 1e-5,
    qk_atol: 1e-5,
    qk_rtol: 0.0,
    probs: 1e-5,
};

#[test]
fn edited_passes_of_the_tiny_llama_and_gpt2_equal_transformers_with_hooks() {
    for name in ["tiny-llama", "tiny-gpt2"] {
        let model = load(&fixture(name), DeviceChoice::Cpu);
        check_edits(&model, &fixture(name), TINY);
    }
}

#[test]
fn edited_passes_are_the_same_on_wgpu() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let folder = fixture("tiny-llama");
    let model = Model::load(&folder, &device.device, &|_| {}).expect("load");
    // lavapipe's attention differs from the CPU's by up to 3e-5 (model_families.rs).
    let tolerance = Tolerance {
        attn: 3e-5,
        qk_atol: 3e-5,
        qk_rtol: 1e-5,
        probs: 3e-5,
    };
    check_edits(&model, &folder, tolerance);
}

#[test]
fn edited_passes_of_smollm2_equal_transformers_with_hooks() {
    let Some(path) = real_model("smollm2") else {
        return;
    };
    let model = load(&path, DeviceChoice::Cpu);
    // Attention and lse within 1e-4; the next-token probabilities within 2e-4: the unedited
    // pass already differs from transformers by 1.1e-4 on p = 0.77 (30 layers of f32 rounding
    // in another summation order; real_models.rs), and the edits add nothing to that.
    let tolerance = Tolerance {
        attn: 1e-4,
        qk_atol: 1e-4,
        qk_rtol: 1e-4,
        probs: 2e-4,
    };
    check_edits(&model, &fixture("real/smollm2"), tolerance);
}

#[test]
fn edits_outside_the_model_or_the_input_are_refused_by_name() {
    let model = load(&fixture("tiny-llama"), DeviceChoice::Cpu);
    let input = TokenInput {
        ids: vec![1, 310, 373],
        type_ids: vec![0; 3],
        key_valid: None,
    };
    for (spec, needle) in [
        ("ablate:7.0", "2 layers"),
        ("ablate-mean:0.9", "4 heads"),
        ("scale:*.*:5=0.5", "3 tokens"),
    ] {
        let edit: Edit = spec.parse().unwrap();
        let err = model
            .forward_edited(&input, AttentionCapture::Full, &[edit])
            .unwrap_err()
            .to_string();
        assert!(err.contains(spec) && err.contains(needle), "{err}");
    }
}

/// `headwise trace --edit` stores each text's unedited run and, after it, the edited run with
/// its edits and `base`; a session keeping only q, k and lse reopens with the edited attention
/// exact (the `scale` edit's bias is part of the logits the lse sums).
#[test]
fn trace_with_edits_stores_the_edited_run_after_its_base_and_it_reopens_exact() {
    use headwise_engine::session::Session;
    let dir = scratch("trace-edits");
    let folder = fixture("tiny-llama");
    let (expected, runs, _) = runs(&folder);
    // Run 4: ablate:1.2 and scale:*.*:0=0.5 together.
    let specs: Vec<String> = runs[4].iter().map(|e| e.to_string()).collect();
    assert_eq!(specs, ["ablate:1.2", "scale:*.*:0=0.5"]);
    let prompt = expected.prompts()[0].clone();
    for attention in ["full", "none"] {
        let mut args = vec!["--text", prompt.as_str(), "--attention", attention];
        for spec in &specs {
            args.extend(["--edit", spec.as_str()]);
        }
        let path = trace_to(&dir, &folder, &args, &format!("{attention}.safetensors"));
        let session = Session::open(&path).unwrap();
        assert_eq!(session.meta.inputs.len(), 2);
        let (base, edited) = (&session.meta.inputs[0], &session.meta.inputs[1]);
        assert!(base.edits.is_empty() && base.base.is_none());
        assert_eq!(edited.edits, specs);
        assert_eq!(edited.base, Some(0));
        for l in 0..2 {
            let attn = session.layers[1][l]
                .attn
                .as_ref()
                .expect("rebuilt on opening");
            assert_close(
                &format!("--attention {attention}: edited attn layer {l}"),
                attn,
                expected.get(&format!("edit4/attn/0/{l}")),
                1e-5,
            );
            // Rows computed from q, k and lse as the views do agree.
            let parts = session.qk_parts(1, l).unwrap();
            let t = edited.tokens.len();
            let mut row = vec![0.0; t];
            parts.attention().row(3, t - 1, 0..t, &mut row);
            let want = &attn.data[(3 * t + t - 1) * t..][..t];
            for (a, b) in row.iter().zip(want) {
                assert!((a - b).abs() < 1e-6, "row from q, k and lse: {a} vs {b}");
            }
        }
        assert_ne!(
            session.layers[0][1].attn, session.layers[1][1].attn,
            "the edit changed the attention"
        );
    }
    let out = headwise(
        &[
            "trace",
            "--model",
            folder.to_str().unwrap(),
            "--text",
            "a b",
            "--edit",
            "ablate:9.0",
        ],
        &dir,
    );
    assert_clean_failure(&out, &["ablate:9.0", "2 layers"]);
    let out = headwise(
        &[
            "trace",
            "--model",
            folder.to_str().unwrap(),
            "--text",
            "a b",
            "--edit",
            "mute:1.0",
        ],
        &dir,
    );
    assert_clean_failure(&out, &["mute:1.0"]);
}

/// The comparison of an edited run with its base: an ablation in the last layer changes no
/// head's attention (it acts after attention, and no layer follows), a scale of the first key
/// changes every head's; the next-token distributions of both are in the session, and the
/// overview coloured by change draws.
#[test]
fn the_change_of_each_head_against_its_base_follows_the_edit() {
    use headwise::document::Document;
    use headwise_engine::analysis::change::kl_divergence;
    use headwise_engine::session::Session;
    let dir = scratch("change");
    let folder = fixture("tiny-llama");
    let text = "the quick brown fox jumps over the lazy dog";
    let mut last = None;
    for (edit, changes) in [("ablate:1.2", false), ("scale:*.*:0=0.5", true)] {
        let name = format!("{}.safetensors", edit.replace([':', '*', '.', '='], "_"));
        let path = trace_to(&dir, &folder, &["--text", text, "--edit", edit], &name);
        let doc = std::sync::Arc::new(Document::new(Session::open(&path).unwrap()));
        let none = headwise::jobs::Repaint::none();
        let change = doc
            .caches
            .changes
            .get(&doc, 1, &none, true)
            .expect("input 1 is an edited run");
        for (l, heads) in change.iter().enumerate() {
            for (h, &c) in heads.iter().enumerate() {
                if changes {
                    assert!(c > 1e-3, "{edit}: L{l}.H{h} changed by {c}");
                } else {
                    assert!(c < 1e-6, "{edit}: L{l}.H{h} changed by {c}");
                }
            }
        }
        assert!(
            doc.caches.changes.get(&doc, 0, &none, true).is_none(),
            "the base has no base"
        );
        let (before, after) = (
            doc.session.next_token_probs(0).unwrap(),
            doc.session.next_token_probs(1).unwrap(),
        );
        assert!(
            kl_divergence(&before, &after) > 1e-6,
            "{edit} moved the prediction"
        );
        let img = render(&dir, &path, "overview", &format!("{name}.png"));
        assert!(img.width() > 0);
        last = Some(path);
    }
    let path = last.expect("the scale edit's session");
    // Kept as q, k and lse only (as a long input is), the change is rebuilt a row at a time:
    // the same figures.
    let none = headwise::jobs::Repaint::none();
    let [whole, by_rows] = [false, true].map(|strip| {
        let mut session = Session::open(&path).unwrap();
        if strip {
            session
                .layers
                .iter_mut()
                .flatten()
                .for_each(|l| l.attn = None);
        }
        let doc = std::sync::Arc::new(Document::new(session));
        assert_eq!(doc.materialised(1), !strip);
        let change = doc.caches.changes.get(&doc, 1, &none, true).unwrap();
        (*change).clone()
    });
    for (l, (a, b)) in whole.iter().zip(&by_rows).enumerate() {
        for (h, (a, b)) in a.iter().zip(b).enumerate() {
            assert!((a - b).abs() < 1e-5, "L{l}.H{h}: {a} whole, {b} by rows");
        }
    }
    let img = render_with(
        &dir,
        &path,
        &["--view", "overview", "--metric", "change", "--input", "1"],
        "change.png",
    );
    let viridis = headwise::render::colormap::ColorMap::Viridis;
    let cells = img
        .pixels()
        .filter(|p| viridis.decode([p.0[0], p.0[1], p.0[2]]).1 <= 12)
        .count();
    // Eight cells of 64 points and the legend: thousands of pixels of the map.
    assert!(cells > 2_000, "{cells} pixels of coloured cells");
}

/// The head view's difference of an edited run from its base, drawn with the diverging map:
/// scaling down the first key turns its column blue (less attention) and the rest red (more);
/// an ablation that leaves attention alone draws white only.
#[test]
fn the_difference_view_draws_less_attention_blue_and_more_red() {
    let dir = scratch("difference");
    let folder = fixture("tiny-llama");
    let text = "the quick brown fox jumps over the lazy dog";
    let diverging = headwise::render::colormap::ColorMap::Diverging;
    let mut shares = Vec::new();
    for edit in ["scale:*.*:0=0.2", "ablate:1.2"] {
        let name = if edit.starts_with("scale") {
            "scale"
        } else {
            "ablate"
        };
        let path = trace_to(
            &dir,
            &folder,
            &["--text", text, "--edit", edit],
            &format!("{name}.safetensors"),
        );
        let png = dir.join(format!("{name}.png"));
        assert_success(&headwise(
            &[
                "render",
                path.to_str().unwrap(),
                "--view",
                "head:1.0",
                "--metric",
                "change",
                "--input",
                "1",
                "--out",
                png.to_str().unwrap(),
            ],
            &dir,
        ));
        let img = image::open(&png).unwrap().to_rgba8();
        let (mut blue, mut red, mut white) = (0usize, 0usize, 0usize);
        for p in img.pixels() {
            let (t, distance) = diverging.decode([p.0[0], p.0[1], p.0[2]]);
            if distance > 12 {
                continue;
            }
            if t < 0.45 {
                blue += 1;
            } else if t > 0.55 {
                red += 1;
            } else {
                white += 1;
            }
        }
        shares.push((edit, blue, red, white));
    }
    let (_, blue, red, white) = shares[0];
    assert!(blue > 500 && red > 500 && white > 0, "scale: {shares:?}");
    let (_, blue, red, white) = shares[1];
    assert!(
        blue == 0 && red == 0 && white > 10_000,
        "ablate: {shares:?}"
    );
}

/// `headwise compare`: a second model of the same shape on the same text (here the tiny Llama
/// and its copy with linear RoPE scaling) joins the first's session as runs compared with the
/// first model's, with its own attention and next-token distribution; other shapes are refused.
#[test]
fn two_models_of_the_same_shape_compare_in_one_session_and_other_shapes_are_refused() {
    use headwise_engine::session::Session;
    let dir = scratch("compare-models");
    let text = "the quick brown fox jumps over the lazy dog";
    let first = traced_session(&dir, "tiny-llama", &[text], "first.safetensors");
    let second = traced_session(&dir, "tiny-llama-linear", &[text], "second.safetensors");
    let out = dir.join("both.safetensors");
    let run = |a: &std::path::Path, b: &std::path::Path, out: &std::path::Path| {
        headwise(
            &[
                "compare",
                a.to_str().unwrap(),
                b.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            &dir,
        )
    };
    assert_success(&run(&first, &second, &out));
    let both = Session::open(&out).expect("opens");
    let alone = Session::open(&second).unwrap();
    assert_eq!(both.meta.inputs.len(), 2);
    let info = &both.meta.inputs[1];
    assert_eq!(info.base, Some(0));
    assert_eq!(
        info.model.as_deref(),
        Some(alone.meta.model.source.as_str())
    );
    let (a, b) = (both.layers[1][1].full(), alone.layers[0][1].full());
    assert_eq!(a.data, b.data, "the second model's attention, unchanged");
    let (p, q) = (
        both.next_token_probs(0)
            .expect("the first model's distribution"),
        both.next_token_probs(1)
            .expect("the second model's distribution"),
    );
    assert_ne!(p, q, "two different models predict differently");
    // The comparison views draw: the overview by change.
    render_with(
        &dir,
        &out,
        &["--view", "overview", "--metric", "change", "--input", "1"],
        "change.png",
    );
    let other_shape = traced_session(&dir, "tiny-gpt2", &[text], "gpt2.safetensors");
    let refused = run(&first, &other_shape, &dir.join("never.safetensors"));
    assert_clean_failure(&refused, &["is not the shape of"]);
}

//! The extreme-token figures every forward pass captures equal transformers' (forward hooks,
//! scripts/make_extreme_token_fixtures.py): each value vector's norm (`vnorm`), each token's
//! hidden-state norm after every layer (`norms`) and the residual stream's largest activations
//! (`massive`), on every model fixture and on the real models, to 1e-4 relative.

use headwise_engine::device::DeviceChoice;
use headwise_engine::host::HostTensor;
use headwise_engine::{Model, PixelInput, TokenInput, Trace};
use headwise_tests::*;
use std::path::Path;

const RTOL: f32 = 1e-4;

/// What the fixture's extreme.safetensors holds, and the inputs it was made from.
fn references(folder: &Path) -> (Expected, Vec<Vec<u32>>) {
    let bytes = std::fs::read(folder.join("extreme.safetensors")).expect("extreme.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid");
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let data =
                headwise_engine::model::safetensors_file::decode_floats(view.dtype(), view.data())
                    .expect("floats");
            (name, HostTensor::new(view.shape().to_vec(), data))
        })
        .collect();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).expect("header");
    let meta: serde_json::Value =
        serde_json::from_str(&header.metadata().as_ref().expect("metadata")["fixture"])
            .expect("JSON");
    let ids = meta["token_ids"]
        .as_array()
        .map(|lists| {
            lists
                .iter()
                .map(|l| {
                    l.as_array()
                        .expect("ids")
                        .iter()
                        .map(|i| i.as_u64().expect("id") as u32)
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default();
    (Expected { tensors, meta }, ids)
}

/// One trace per input of the fixture: its token ids, or the pixels expected.safetensors holds.
fn traces(model: &Model, folder: &Path, ids: &[Vec<u32>]) -> Vec<Trace> {
    if ids.is_empty() {
        let expected = Expected::load(folder);
        let pixels = expected.get("pixels");
        let [channels, height, width] = pixels.shape[..] else {
            panic!("pixels are [3, H, W]")
        };
        let input = PixelInput {
            pixels: pixels.data.to_vec(),
            channels,
            height,
            width,
        };
        return vec![model.forward_image(&input).expect("forward")];
    }
    ids.iter()
        .map(|ids| {
            let input = TokenInput {
                ids: ids.clone(),
                type_ids: vec![0; ids.len()],
                key_valid: None,
            };
            model.forward(&input).expect("forward")
        })
        .collect()
}

/// Compares every input's and layer's vnorm, norms and massive activations; `what` names the
/// fixture in failures.
fn check(what: &str, traces: &[Trace], reference: &Expected) {
    for (p, trace) in traces.iter().enumerate() {
        for (l, layer) in trace.layers.iter().enumerate() {
            let vnorm = headwise_engine::model::to_vec(layer.vnorm.clone()).unwrap();
            let key = format!("vnorm/{p}/{l}");
            assert_allclose(
                &format!("{what} {key}"),
                &HostTensor::new(layer.vnorm.dims().to_vec(), vnorm),
                reference.get(&key),
                0.0,
                RTOL,
            );
            let residual = layer.residual.first().expect("residual figures");
            let key = format!("norms/{p}/{l}");
            assert_allclose(
                &format!("{what} {key}"),
                &HostTensor::new(vec![residual.norms.len()], residual.norms.clone()),
                reference.get(&key),
                0.0,
                RTOL,
            );
            let key = format!("massive/{p}/{l}");
            check_massive(
                &format!("{what} {key}"),
                &residual.massive,
                reference.get(&key),
            );
        }
    }
}

/// The largest activations agree in value, in order; and in token and channel wherever the
/// reference's neighbours are not within rounding of each other (a near tie may swap).
fn check_massive(what: &str, ours: &[[f32; 3]], reference: &HostTensor) {
    let rows: Vec<[f32; 3]> = reference
        .data
        .chunks_exact(3)
        .map(|r| [r[0], r[1], r[2]])
        .filter(|r| r[0] >= 0.0)
        .collect();
    assert_eq!(ours.len(), rows.len(), "{what}: rows");
    let scale = rows.first().map_or(1.0, |r| r[2].abs());
    let tol = RTOL * scale;
    for (r, (a, e)) in ours.iter().zip(&rows).enumerate() {
        assert!(
            (a[2].abs() - e[2].abs()).abs() <= tol,
            "{what}: row {r}: |{}| vs transformers' |{}|",
            a[2],
            e[2]
        );
        let isolated = [r.checked_sub(1), Some(r + 1)]
            .into_iter()
            .flatten()
            .filter_map(|n| rows.get(n))
            .all(|n| (n[2].abs() - e[2].abs()).abs() > 2.0 * tol);
        if isolated {
            assert_eq!(
                (a[0], a[1], a[2].signum()),
                (e[0], e[1], e[2].signum()),
                "{what}: row {r}: (token, channel, sign)"
            );
        }
    }
}

#[test]
fn every_model_fixture_captures_value_norms_hidden_norms_and_massive_activations_as_transformers() {
    let mut checked = Vec::new();
    let mut folders: Vec<_> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("extreme.safetensors").exists())
        .collect();
    folders.sort();
    for folder in folders {
        let name = folder.file_name().unwrap().to_string_lossy().to_string();
        let (reference, ids) = references(&folder);
        let model = load(&folder, DeviceChoice::Cpu);
        check(&name, &traces(&model, &folder, &ids), &reference);
        checked.push(name);
    }
    assert!(checked.len() >= 25, "only {checked:?}");
}

#[test]
fn value_norms_and_residual_figures_are_the_same_on_wgpu() {
    let Some(device) = wgpu_device() else {
        return;
    };
    for name in ["tiny-llama", "tiny-bert", "tiny-vit"] {
        let folder = fixture(name);
        let (reference, ids) = references(&folder);
        let model = Model::load(&folder, &device.device, &|_| {}).expect("load");
        check(name, &traces(&model, &folder, &ids), &reference);
    }
}

#[test]
fn the_real_models_capture_value_norms_hidden_norms_and_massive_activations_as_transformers() {
    for name in ["minilm", "smollm2", "dinov2-s"] {
        let Some(path) = real_model(name) else {
            continue;
        };
        let folder = fixture(&format!("real/{name}"));
        let (reference, ids) = references(&folder);
        let model = load(&path, DeviceChoice::Cpu);
        check(name, &traces(&model, &folder, &ids), &reference);
    }
}

/// Value-weighted attention is α_ij·|v_j| renormalised per row: checked against that formula
/// on the session's own attention and value norms, and the same from q, k and lse alone (a
/// session traced with `--attention none`) as from the materialised matrices.
#[test]
fn value_weighted_attention_is_attention_times_value_norm_renormalised_from_matrices_or_from_q_k_and_lse()
 {
    use headwise_engine::analysis::value_weighting::value_weighted;
    use headwise_engine::session::Session;
    let dir = scratch("value-weighted");
    let texts = [
        "the quick brown fox jumps over the lazy dog",
        "Paris is the capital of France",
    ];
    let inputs: Vec<&str> = texts.iter().flat_map(|t| ["--text", *t]).collect();
    let model = fixture("tiny-llama");
    let mut full_args = inputs.clone();
    full_args.extend(["--attention", "full"]);
    let full = Session::open(&trace_to(&dir, &model, &full_args, "full.safetensors")).unwrap();
    let mut none_args = inputs.clone();
    none_args.extend(["--attention", "none"]);
    let mut none = Session::open(&trace_to(&dir, &model, &none_args, "none.safetensors")).unwrap();
    // Opening rebuilds small inputs' attention: drop it, to weigh from q, k and lse alone.
    for layer in none.layers.iter_mut().flatten() {
        layer.attn = None;
    }
    let never = std::sync::atomic::AtomicBool::new(false);
    let weighted_full = value_weighted(&full, &never, |_| {}).unwrap();
    let weighted_none = value_weighted(&none, &never, |_| {}).unwrap();
    let (heads, kv_heads) = (full.meta.model.heads, full.meta.model.kv_heads);
    for (i, layers) in full.layers.iter().enumerate() {
        let t = full.meta.inputs[i].tokens.len();
        for (l, layer) in layers.iter().enumerate() {
            let attn = layer.attn.as_ref().unwrap();
            let norms = full.value_norms(i, l).unwrap();
            let ours = weighted_full.layers[i][l].attn.as_ref().unwrap();
            let parts = weighted_none.qk_parts(i, l).unwrap();
            let from_qk = parts.attention();
            for h in 0..heads {
                let n = &norms[h / (heads / kv_heads) * t..][..t];
                for q in 0..t {
                    let row = &attn.data[(h * t + q) * t..][..t];
                    let sum: f32 = row.iter().zip(n).map(|(a, v)| a * v).sum();
                    let mut rebuilt = vec![0.0; t];
                    from_qk.row(h, q, 0..t, &mut rebuilt);
                    for j in 0..t {
                        let want = row[j] * n[j] / sum;
                        let got = ours.data[(h * t + q) * t + j];
                        assert!((got - want).abs() < 1e-6, "input {i} L{l}.H{h} ({q},{j})");
                        assert!(
                            (rebuilt[j] - want).abs() < 1e-5,
                            "from q, k and lse: input {i} L{l}.H{h} ({q},{j}): {} vs {want}",
                            rebuilt[j]
                        );
                    }
                }
            }
        }
    }
}

/// A probe session in which one head copies the answer from the needle: that head scores 1 and
/// highest, in the engine and in `headwise metrics`.
#[test]
fn a_head_that_copies_from_the_needle_scores_highest_in_a_probe_session() {
    use headwise_engine::analysis::retrieval::{ProbeLayout, retrieval_scores};
    use headwise_engine::session::Session;
    let dir = scratch("probe-synthetic");
    let text = "red fox. key seven four two. blue. key seven four two.";
    let path = traced_session(&dir, "tiny-llama", &[text], "probe.safetensors");
    let mut session = Session::open(&path).unwrap();
    let ids = session.meta.inputs[0].token_ids.clone();
    let t = ids.len();
    // The answer: the longest tail of the input that repeats earlier (the needle).
    let layout = (2..t / 2)
        .rev()
        .find_map(|n| ProbeLayout::find(&ids, n))
        .expect("the answer repeats the needle");
    assert!(layout.answer().len() >= 3, "{layout:?}");
    session.meta.inputs[0].probe = Some(layout.clone());
    // Layer 1, head 2 copies: the query before each answer token looks at that token's copy in
    // the needle; every other row keeps the model's own attention.
    let (layer, head) = (1, 2);
    let attn = session.layers[0][layer].attn.as_mut().unwrap();
    for p in layout.answer() {
        let source = layout.needle[0] + (p - layout.answer[0]);
        let row = &mut attn.data[(head * t + p - 1) * t..][..t];
        row.fill(0.0);
        row[source] = 0.7;
        row[0] = 0.3;
    }
    let scores = retrieval_scores(&session, 0).unwrap();
    assert_eq!(scores[layer][head], 1.0);
    let best = scores
        .iter()
        .enumerate()
        .flat_map(|(l, hs)| hs.iter().enumerate().map(move |(h, &s)| (l, h, s)))
        .max_by(|a, b| a.2.total_cmp(&b.2).then(b.0.cmp(&a.0)))
        .unwrap();
    assert_eq!((best.0, best.1), (layer, head));
    session.save(&path, session.dtype).unwrap();
    let json = dir.join("metrics.json");
    let out = headwise(
        &[
            "metrics",
            path.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
        &dir,
    );
    assert_success(&out);
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        metrics["inputs"][0]["metrics"]["retrieval"][layer][head],
        1.0
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("L{layer}.H{head} 1.000")));
}

/// `headwise probe retrieval` on SmolLM2: a needle-in-a-haystack session whose layout and
/// scores reopen without the model, with heads that copy the answer from the needle.
#[test]
fn the_retrieval_probe_finds_heads_of_smollm2_that_copy_from_the_needle() {
    use headwise_engine::session::Session;
    let Some(model) = real_model("smollm2") else {
        return;
    };
    let dir = scratch("probe-smollm2");
    let out_path = dir.join("probe.safetensors");
    let out = headwise(
        &[
            "probe",
            "retrieval",
            "--model",
            model.to_str().unwrap(),
            "--tokens",
            "512",
            "--device",
            "cpu",
            "--out",
            out_path.to_str().unwrap(),
        ],
        &dir,
    );
    assert_success(&out);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        printed
            .lines()
            .filter(|l| l.trim_start().starts_with('L'))
            .count(),
        10
    );
    let session = Session::open(&out_path).unwrap();
    let layout = session.meta.inputs[0]
        .probe
        .clone()
        .expect("the probe's layout");
    let t = session.meta.inputs[0].tokens.len();
    assert!((480..=544).contains(&t), "{t} tokens");
    assert!(layout.needle[1] <= layout.answer[0] && layout.answer[1] == t);
    let stored = session.extras.get("retrieval/0").expect("retrieval/0");
    assert_eq!(stored.shape, vec![30, 9]);
    let scores = headwise_engine::analysis::retrieval::retrieval_scores(&session, 0).unwrap();
    let best = scores.iter().flatten().fold(0.0f32, |m, &s| m.max(s));
    assert!(best >= 0.5, "the best head copies {best} of the answer");
}

/// The token panel draws its three plots with a line per marked token and the heatmap, and the
/// overview coloured by sink share changes when attention is value-weighted (a sink whose value
/// is near zero moves little).
#[test]
fn the_token_panel_and_the_value_weighted_overview_render() {
    let Some(model) = real_model("smollm2") else {
        return;
    };
    let dir = scratch("token-panel");
    let paragraph = "The lighthouse stood at the edge of the cliff, and every night its keeper \
                     climbed the stairs to light the lamp. Ships passing in the dark relied on \
                     its beam to steer clear of the rocks below.";
    let session = trace_to(&dir, &model, &["--text", paragraph], "para.safetensors");
    let panel = render(&dir, &session, "tokens", "tokens.png");
    // The first line colour (the first token's) and the second's, drawn in the plots.
    let count = |rgb: [u8; 3]| panel.pixels().filter(|p| p.0[..3] == rgb).count();
    assert!(count([255, 120, 80]) > 100, "first token's line");
    assert!(count([90, 170, 255]) > 100, "second token's line");
    let viridis = headwise::render::colormap::ColorMap::Viridis;
    let heatmap = panel
        .pixels()
        .filter(|p| viridis.decode([p.0[0], p.0[1], p.0[2]]).1 <= 12)
        .count();
    assert!(heatmap > 50_000, "{heatmap} heatmap pixels");
    let raw = dir.join("raw.png");
    let weighted = dir.join("weighted.png");
    for (png, extra) in [(&raw, None), (&weighted, Some("--value-weighted"))] {
        let mut args = vec![
            "render",
            session.to_str().unwrap(),
            "--view",
            "overview",
            "--metric",
            "sink",
            "--out",
            png.to_str().unwrap(),
        ];
        args.extend(extra);
        assert_success(&headwise(&args, &dir));
    }
    let (a, b) = (
        image::open(&raw).unwrap().to_rgba8(),
        image::open(&weighted).unwrap().to_rgba8(),
    );
    assert_eq!(a.dimensions(), b.dimensions());
    let changed = a.pixels().zip(b.pixels()).filter(|(x, y)| x != y).count();
    assert!(
        changed * 20 > (a.width() * a.height()) as usize,
        "only {changed} pixels changed"
    );
    let out = headwise(&["metrics", session.to_str().unwrap()], &dir);
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("sink rate"));
}

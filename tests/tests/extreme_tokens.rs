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

//! Where models come from: sharded safetensors folders and repo ids in the Hugging Face cache
//! give the same model as a plain folder.

use headwise_engine::device::DeviceChoice;
use headwise_tests::*;
use std::collections::HashMap;
use std::path::Path;

/// Splits `model.safetensors` into two shards with a `model.safetensors.index.json`, as
/// transformers writes large checkpoints.
fn shard(folder: &Path) {
    let single = folder.join("model.safetensors");
    let bytes = std::fs::read(&single).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = st.tensors();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let half = tensors.len() / 2;
    let mut weight_map = serde_json::Map::new();
    for (i, part) in [&tensors[..half], &tensors[half..]].into_iter().enumerate() {
        let name = format!("model-0000{}-of-00002.safetensors", i + 1);
        let data =
            safetensors::serialize(part.iter().map(|(n, v)| (n.clone(), v.clone())), None).unwrap();
        std::fs::write(folder.join(&name), data).unwrap();
        for (tensor, _) in part {
            weight_map.insert(tensor.clone(), serde_json::json!(name));
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        folder.join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    std::fs::remove_file(single).unwrap();
}

#[test]
fn sharded_safetensors_checkpoint_matches_transformers() {
    let dir = scratch("sharded");
    let folder = dir.join("tiny-llama-sharded");
    copy_dir(&fixture("tiny-llama"), &folder);
    shard(&folder);
    assert!(!folder.join("model.safetensors").exists());
    let model = load(&folder, DeviceChoice::Cpu);
    check_against_transformers(&model, &Expected::load(&fixture("tiny-llama")), 1e-5);
}

#[test]
fn repo_id_is_found_in_the_hugging_face_cache_named_by_hf_hub_cache() {
    let home = scratch("hub-cache");
    let hub = home.join("hub");
    let repo = hub.join("models--tiny-org--tiny-bert");
    let snapshot = repo.join("snapshots").join("0123abcd");
    copy_dir(&fixture("tiny-bert"), &snapshot);
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), "0123abcd").unwrap();
    let out = home.join("s.safetensors");
    let result = std::process::Command::new(headwise_bin())
        .args([
            "trace",
            "--model",
            "tiny-org/tiny-bert",
            "--text",
            "hello there",
            "--out",
        ])
        .arg(&out)
        .envs(HashMap::from([
            ("HEADWISE_HOME", home.as_os_str()),
            ("HF_HUB_CACHE", hub.as_os_str()),
        ]))
        .output()
        .unwrap();
    assert_success(&result);
    let session = headwise_engine::session::Session::open(&out).unwrap();
    assert_eq!(session.meta.model.source, "tiny-org/tiny-bert");
    assert_eq!(session.meta.model.model_type, "bert");
}

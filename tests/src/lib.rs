//! Helpers for headwise's end-to-end tests: fixtures, reference tensors, tolerances, and the
//! `headwise` binary.

use headwise_engine::device::{DeviceChoice, create_device};
use headwise_engine::host::HostTensor;
use headwise_engine::locate::{Located, locate};
use headwise_engine::model::safetensors_file::decode_floats;
use headwise_engine::session::LayerTensors;
use headwise_engine::{Model, TokenInput};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod hostile;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// What transformers computed for a fixture (written by scripts/make_fixtures.py).
pub struct Expected {
    pub tensors: HashMap<String, HostTensor>,
    pub meta: serde_json::Value,
}

impl Expected {
    pub fn load(folder: &Path) -> Self {
        Self::load_file(&folder.join("expected.safetensors"))
    }

    /// Any reference file written like expected.safetensors (its metadata key "fixture").
    pub fn load_file(path: &Path) -> Self {
        let path = path.to_path_buf();
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid fixture");
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                let data = decode_floats(view.dtype(), view.data()).expect("float fixture");
                (name, HostTensor::new(view.shape().to_vec(), data))
            })
            .collect();
        let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).expect("header");
        let meta = metadata.metadata().as_ref().expect("metadata")["fixture"].clone();
        Self {
            tensors,
            meta: serde_json::from_str(&meta).expect("fixture JSON"),
        }
    }

    pub fn get(&self, name: &str) -> &HostTensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("fixture has no {name}"))
    }

    pub fn prompts(&self) -> Vec<String> {
        self.meta["prompts"]
            .as_array()
            .expect("prompts")
            .iter()
            .map(|p| p.as_str().expect("string").to_string())
            .collect()
    }

    pub fn token_ids(&self, key: &str) -> Vec<Vec<u32>> {
        self.meta[key]
            .as_array()
            .expect("token id lists")
            .iter()
            .map(|ids| {
                ids.as_array()
                    .expect("ids")
                    .iter()
                    .map(|i| i.as_u64().expect("id") as u32)
                    .collect()
            })
            .collect()
    }
}

/// A layer's materialised attention, which these tests always ask for (`Model::forward` keeps
/// it): a test fails here if a layer has only q, k and lse.
pub trait Materialised {
    fn full(&self) -> &HostTensor;
}

impl Materialised for LayerTensors {
    fn full(&self) -> &HostTensor {
        self.attn
            .as_ref()
            .expect("the layer's attention is materialised")
    }
}

/// Panics with the worst element if `actual` and `expected` differ by more than `tol`.
pub fn assert_close(what: &str, actual: &HostTensor, expected: &HostTensor, tol: f32) {
    assert_allclose(what, actual, expected, tol, 0.0)
}

/// Panics unless every |actual - expected| <= atol + rtol * max|expected|: a bound relative to
/// the tensor's scale, for unnormalised tensors whose rounding grows with their magnitude.
pub fn assert_allclose(
    what: &str,
    actual: &HostTensor,
    expected: &HostTensor,
    atol: f32,
    rtol: f32,
) {
    assert_eq!(actual.shape, expected.shape, "{what}: shape");
    let scale = expected.data.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let atol = atol + rtol * scale;
    let (worst, at) = actual
        .data
        .iter()
        .zip(expected.data.iter())
        .map(|(a, e)| (a - e).abs())
        .enumerate()
        .fold((0.0f32, 0), |(w, wi), (i, d)| {
            if d > w || d.is_nan() { (d, i) } else { (w, wi) }
        });
    assert!(
        worst <= atol,
        "{what}: max |difference| {worst:e} > {atol:e} at flat index {at} (ours {}, transformers {})",
        actual.data[at],
        expected.data[at]
    );
}

/// Runs `model` on every prompt of `expected` and compares tokens, attention, q and k (and the
/// next-token distribution for decoders) to `tol`.
pub fn check_against_transformers(model: &Model, expected: &Expected, tol: f32) {
    let tolerance = Tolerance {
        attn: tol,
        qk_atol: tol,
        qk_rtol: 0.0,
        probs: tol,
    };
    check_against_transformers_with(model, expected, tolerance)
}

/// How close a trace must be to transformers'. Attention probabilities lie in [0, 1], so an
/// absolute bound suits them; q and k are unnormalised (|k| up to ~15 in SmolLM2), and after
/// many layers f32 rounding in a different summation order reaches ~1e-5 of their scale.
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    pub attn: f32,
    pub qk_atol: f32,
    pub qk_rtol: f32,
    pub probs: f32,
}

pub fn check_against_transformers_with(model: &Model, expected: &Expected, tolerance: Tolerance) {
    let ids = expected.token_ids("token_ids");
    for (p, prompt) in expected.prompts().iter().enumerate() {
        let encoded = model.encode(p, prompt, Default::default()).expect("encode");
        assert_eq!(encoded.ids, ids[p], "token ids of prompt {p}");
        let trace = model.forward(&TokenInput::from(&encoded)).expect("forward");
        assert_eq!(trace.layers.len(), model.config.layers);
        for (l, layer) in trace.layers.iter().enumerate() {
            let ours = LayerTensors::from_trace(layer).expect("read back");
            let key = format!("attn/{p}/{l}");
            assert_close(&key, ours.full(), expected.get(&key), tolerance.attn);
            // lse is in logit units, unnormalised like q and k: their tolerance, and at least
            // 2e-6 of the largest |lse| (a logit of 10 carries ~1e-6 of f32 rounding from the
            // d-term dot product alone).
            let key = format!("lse/{p}/{l}");
            if let Some(reference) = expected.tensors.get(&key) {
                assert_allclose(
                    &key,
                    &lse_of(layer),
                    reference,
                    tolerance.qk_atol,
                    tolerance.qk_rtol.max(2e-6),
                );
            }
            for (name, t) in [("q", &ours.q), ("k", &ours.k)] {
                let key = format!("{name}/{p}/{l}");
                assert_allclose(
                    &key,
                    t,
                    expected.get(&key),
                    tolerance.qk_atol,
                    tolerance.qk_rtol,
                );
            }
        }
        if let Some(reference) = expected.tensors.get(&format!("next_token_probs/{p}")) {
            let probs = trace
                .next_token_probs
                .clone()
                .expect("decoder gives next-token probabilities");
            let ours = HostTensor::new(vec![probs.len()], probs);
            assert_close(
                &format!("next_token_probs/{p}"),
                &ours,
                reference,
                tolerance.probs,
            );
        }
    }
}

/// A layer's captured logsumexp per query row, [heads, T], on the host.
pub fn lse_of(layer: &headwise_engine::LayerTrace) -> HostTensor {
    let values = headwise_engine::model::to_vec(layer.lse.clone()).expect("read back lse");
    HostTensor::new(layer.lse.dims().to_vec(), values)
}

pub fn load(path: &Path, device: DeviceChoice) -> Model {
    let device = create_device(device).expect("device");
    Model::load(path, &device.device, &|_| {})
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// Whether the environment asks for a capability to be present rather than skipped
/// (CI sets these, so a missing model or adapter fails there instead of passing silently).
pub fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
}

/// Says that the running test is skipped and why: on stderr, and as a line `reason<TAB>test`
/// in the file `HEADWISE_SKIP_LOG` names, if it names one (`scripts/test` counts them).
pub fn skipped(reason: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    eprintln!("skipped: {reason}");
    if let Some(log) = std::env::var_os("HEADWISE_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(file, "{reason}\t{test}");
        }
    }
}

/// The wgpu device (lavapipe on CI), or None after saying the test is skipped; a missing
/// adapter fails the test instead when `HEADWISE_REQUIRE_WGPU=1`.
pub fn wgpu_device() -> Option<headwise_engine::device::ComputeDevice> {
    match headwise_engine::device::create_device(headwise_engine::device::DeviceChoice::Gpu) {
        Ok(device) => Some(device),
        Err(e) => {
            assert!(
                !required("HEADWISE_REQUIRE_WGPU"),
                "no wgpu adapter, but HEADWISE_REQUIRE_WGPU=1 ({e})"
            );
            eprintln!("no wgpu adapter: {e}");
            skipped("no wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
            None
        }
    }
}

/// The `headwise` binary built alongside the tests (`cargo test --workspace` builds it).
pub fn headwise_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(format!("headwise{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// Runs `headwise` with `args`, with its cache in `home` so tests never touch the user's.
pub fn headwise(args: &[&str], home: &Path) -> Output {
    Command::new(headwise_bin())
        .args(args)
        .env("HEADWISE_HOME", home)
        .output()
        .expect("run headwise")
}

/// Copies the files (not subfolders) of `from` into `to`, creating it.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// A copy in `dir` of the decoder fixture `name` whose config allows `positions` tokens (the
/// tiny Llamas' RoPE needs no table, so any length runs).
pub fn fixture_allowing(name: &str, positions: usize, dir: &Path) -> PathBuf {
    let folder = dir.join(format!("{name}-{positions}"));
    copy_dir(&fixture(name), &folder);
    let path = folder.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["max_position_embeddings"] = positions.into();
    std::fs::write(&path, config.to_string()).unwrap();
    folder
}

/// A fresh empty folder under the target directory.
pub fn scratch(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .expect("deps dir")
        .join("scratch")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Runs `headwise trace` on the CPU with `model` and the given input flags (e.g.
/// `["--image", path]`) and returns the session it wrote to `dir/name`.
pub fn trace_to(dir: &Path, model: &Path, inputs: &[&str], name: &str) -> PathBuf {
    let out = dir.join(name);
    let mut args = vec!["trace", "--model", model.to_str().unwrap()];
    args.extend_from_slice(inputs);
    args.extend(["--device", "cpu", "--out", out.to_str().unwrap()]);
    assert_success(&headwise(&args, dir));
    out
}

/// Runs `headwise trace` on the CPU with a fixture model over `texts` and returns the session
/// it wrote to `dir/name`.
pub fn traced_session(dir: &Path, model: &str, texts: &[&str], name: &str) -> PathBuf {
    let inputs: Vec<&str> = texts.iter().flat_map(|t| ["--text", t]).collect();
    trace_to(dir, &fixture(model), &inputs, name)
}

/// A real model fetched with `headwise models fetch`, or None (with a message) when it is not
/// here; absent models fail instead where HEADWISE_REQUIRE_REAL_MODELS=1 (CI sets it).
pub fn real_model(name: &str) -> Option<PathBuf> {
    match locate(name).expect("known model") {
        Located::Path(p) => Some(p),
        _ => {
            assert!(
                !required("HEADWISE_REQUIRE_REAL_MODELS"),
                "{name} is not fetched, but HEADWISE_REQUIRE_REAL_MODELS=1"
            );
            skipped(&format!(
                "{name} is not fetched (headwise models fetch {name})"
            ));
            None
        }
    }
}

/// A sample photograph shipped in assets/.
pub fn asset(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../assets")
        .join(name)
}

/// Runs `headwise trace` on the CPU with an image model (a path) over one picture and returns
/// the session it wrote to `dir/name`.
pub fn traced_image_session(dir: &Path, model: &Path, picture: &Path, name: &str) -> PathBuf {
    trace_to(dir, model, &["--image", picture.to_str().unwrap()], name)
}

/// Runs `headwise render` on a session and returns the PNG it wrote to `dir/name`.
pub fn render(dir: &Path, session: &Path, view: &str, name: &str) -> image::RgbaImage {
    render_with(dir, session, &["--view", view], name)
}

/// Runs `headwise render` on a session with `args` (the view and any options) and returns the
/// PNG it wrote to `dir/name`.
pub fn render_with(dir: &Path, session: &Path, args: &[&str], name: &str) -> image::RgbaImage {
    let png = dir.join(name);
    let mut all = vec!["render", session.to_str().unwrap()];
    all.extend_from_slice(args);
    all.extend(["--out", png.to_str().unwrap()]);
    assert_success(&headwise(&all, dir));
    image::open(&png).expect("a PNG").to_rgba8()
}

/// How many different colours a picture has: a few hundred for text and colour maps, thousands
/// where a photograph shows.
pub fn distinct_colours(img: &image::RgbaImage) -> usize {
    img.pixels()
        .map(|p| p.0)
        .collect::<std::collections::HashSet<[u8; 4]>>()
        .len()
}

/// A copy of `path` cut to `numerator / denominator` of its length, as `dir/name`.
pub fn truncated_copy(
    path: &Path,
    numerator: usize,
    denominator: usize,
    dir: &Path,
    name: &str,
) -> PathBuf {
    let bytes = std::fs::read(path).unwrap();
    let broken = dir.join(name);
    std::fs::write(&broken, &bytes[..bytes.len() * numerator / denominator]).unwrap();
    broken
}

/// Asserts a command succeeded, showing its stderr if it did not.
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts a command failed cleanly: non-zero exit, every `needles` in its stderr, no panic.
pub fn assert_clean_failure(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "panicked instead of a clear error: {stderr}"
    );
    for needle in needles {
        assert!(stderr.contains(needle), "stderr lacks '{needle}': {stderr}");
    }
}

/// The tiny Llama (grouped-query attention) traced by `headwise trace --corpus` over the
/// projection fixture's sentences; returns the session it wrote to `dir/corpus.safetensors`.
pub fn traced_corpus_session(dir: &Path) -> PathBuf {
    let corpus = fixture("projection").join("corpus.txt");
    trace_to(
        dir,
        &fixture("tiny-llama"),
        &["--corpus", corpus.to_str().unwrap()],
        "corpus.safetensors",
    )
}

/// Pixels near the query-key view's query (green) and key (pink) colours, whatever their
/// blending with the dark background: (green pixels, pink pixels, 20-pixel columns holding
/// either).
pub fn query_key_pixels(img: &image::RgbaImage) -> (usize, usize, std::collections::BTreeSet<u32>) {
    let (mut green, mut pink) = (0, 0);
    let mut columns = std::collections::BTreeSet::new();
    for (x, _, p) in img.enumerate_pixels() {
        let [r, g, b, _] = p.0.map(i32::from);
        if g > r + 40 && g > b + 25 && g > 60 {
            green += 1;
            columns.insert(x / 20);
        } else if r > g + 50 && b > g + 25 && r > 80 {
            pink += 1;
            columns.insert(x / 20);
        }
    }
    (green, pink, columns)
}

/// Reading rendered pictures back: which pixels carry a colour map's exact colours, and where
/// the bands of such pixels (heatmaps, grid cells) lie.
pub mod pixels {
    use headwise::render::colormap::ColorMap;
    use std::collections::HashSet;

    /// For each pixel, whether its colour is exactly an entry of `map`'s table (what the
    /// heatmap shader writes; text and widgets almost never hit one).
    pub fn map_mask(img: &image::RgbaImage, map: ColorMap) -> Vec<Vec<bool>> {
        let table: HashSet<[u8; 3]> = map.table().into_iter().collect();
        (0..img.height())
            .map(|y| {
                (0..img.width())
                    .map(|x| {
                        let p = img.get_pixel(x, y).0;
                        table.contains(&[p[0], p[1], p[2]])
                    })
                    .collect()
            })
            .collect()
    }

    /// Runs of indices as (start, end exclusive).
    pub type Bands = Vec<(usize, usize)>;

    /// Runs of consecutive indices whose count is at least `min`: (start, end exclusive).
    pub fn bands(counts: &[usize], min: usize) -> Bands {
        let mut out = Vec::new();
        let mut start = None;
        for (i, &c) in counts.iter().chain(std::iter::once(&0)).enumerate() {
            match (c >= min, start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    out.push((s, i));
                    start = None;
                }
                _ => {}
            }
        }
        out
    }

    /// Per-row and per-column counts of mask pixels.
    pub fn counts(mask: &[Vec<bool>]) -> (Vec<usize>, Vec<usize>) {
        let rows = mask
            .iter()
            .map(|r| r.iter().filter(|b| **b).count())
            .collect();
        let width = mask.first().map_or(0, Vec::len);
        let cols = (0..width)
            .map(|x| mask.iter().filter(|r| r[x]).count())
            .collect();
        (rows, cols)
    }

    /// The bands of rows and of columns that are at least half as full of colour-map pixels
    /// as the fullest: in a grid of heatmaps, one band per grid row and per grid column.
    pub fn grid_bands(mask: &[Vec<bool>]) -> (Bands, Bands) {
        let (rows, cols) = counts(mask);
        let half = |c: &[usize]| c.iter().copied().max().unwrap_or(0) / 2;
        (bands(&rows, half(&rows)), bands(&cols, half(&cols)))
    }

    /// The single largest heatmap in a picture: the bounding box of the rows and columns that
    /// are mostly colour-map pixels, as (x0, y0, x1, y1) exclusive.
    pub fn heatmap_box(mask: &[Vec<bool>]) -> (usize, usize, usize, usize) {
        let (rows, cols) = counts(mask);
        let row_max = rows.iter().copied().max().unwrap_or(0);
        let col_max = cols.iter().copied().max().unwrap_or(0);
        let r = bands(&rows, row_max * 3 / 4);
        let c = bands(&cols, col_max * 3 / 4);
        let widest = |b: &[(usize, usize)]| {
            *b.iter()
                .max_by_key(|(s, e)| e - s)
                .expect("a heatmap in the picture")
        };
        let (y0, y1) = widest(&r);
        let (x0, x1) = widest(&c);
        (x0, y0, x1, y1)
    }

    /// Decodes a T x T heatmap inside `bbox` back to weights (linear scale, top colour = 1),
    /// sampling the centre of each cell.
    pub fn decode_heatmap(
        img: &image::RgbaImage,
        bbox: (usize, usize, usize, usize),
        t: usize,
        map: ColorMap,
    ) -> Vec<f32> {
        let (x0, y0, x1, y1) = bbox;
        let (w, h) = ((x1 - x0) as f32, (y1 - y0) as f32);
        let mut out = Vec::with_capacity(t * t);
        for r in 0..t {
            for c in 0..t {
                let x = x0 as f32 + (c as f32 + 0.5) * w / t as f32;
                let y = y0 as f32 + (r as f32 + 0.5) * h / t as f32;
                let p = img.get_pixel(x as u32, y as u32).0;
                out.push(map.decode([p[0], p[1], p[2]]).0);
            }
        }
        out
    }
}

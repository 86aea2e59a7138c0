//! Loading models and running them, in jobs so the window never waits on the engine: the
//! prompt re-runs 300 ms after typing stops, a dropped picture runs an image model, and a corpus
//! runs with progress and a cancel button. A run is the engine's run pipeline, as for
//! `headwise trace`; its result becomes the document on screen.

use super::app::HeadwiseApp;
use super::files::Pending;
use super::settings::Settings;
use crate::document::{DeviceAttention, device_attention};
use crate::jobs::{JobSlot, Progress};
use crate::model_source::resolve_model;
use crate::views::state::Tab;
use eframe::egui;
use headwise_engine::device::{Device, DeviceChoice, create_device};
use headwise_engine::edits::Edit;
use headwise_engine::model::gradients::TargetChoice;
use headwise_engine::pipeline::{self, Generation, Inputs, RunOptions, default_pack_tokens};
use headwise_engine::session::Session;
use headwise_engine::{AttentionCapture, LongInput, Model};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const DEFAULT_MODEL: &str = "minilm";
pub const DEFAULT_PROMPT: &str = "The cat sat on the mat because it was tired.";
/// How long typing must pause before the model runs again.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// A model loaded for the window's runs.
pub struct LoadedModel {
    pub spec: String,
    pub model: Model,
    pub device: String,
    /// Corpus runs pack inputs into passes of this many tokens (see `trace --pack-tokens`).
    pub pack_tokens: usize,
}

/// A run's result.
pub struct Ran {
    pub session: Session,
    /// Where a GPU run left its attention, for the views to draw from (empty on the CPU).
    pub device_attention: DeviceAttention,
    pub took: Duration,
    pub corpus: bool,
}

pub(super) struct Runs {
    device: DeviceChoice,
    /// Where documents compute their slider-driven analyses: the device the user chose.
    analysis_device: Option<Device>,
    loading: JobSlot<String, Result<Arc<LoadedModel>, String>>,
    running: JobSlot<u64, Result<Ran, String>>,
    pub model: Option<Arc<LoadedModel>>,
    pub prompt: String,
    /// The prompt the last run was asked for.
    sent_prompt: Option<String>,
    /// When the prompt was last edited, until the run it waits for starts.
    pub last_edit: Option<Instant>,
    /// The picture an image model runs on.
    pub image: Option<PathBuf>,
    next_run: u64,
    /// The corpus file or picture folder for the query-key view (None: the default corpus).
    pub corpus_path: Option<PathBuf>,
    /// The run under way is a corpus (its result opens the query-key view).
    pub corpus_running: bool,
    /// Edits on the prompt's run (spec, switched on): each run of the prompt is then made as it
    /// is and again with the switched-on edits, the edited run shown beside its base.
    pub edits: Vec<(String, bool)>,
    /// Gradients on each run of the prompt or picture, for this target (`--target`'s forms;
    /// empty: the most likely); None: off.
    pub gradients: Option<String>,
    /// Decoders: continue the prompt by this many tokens before each run (None: off).
    pub generate: Option<Generation>,
    /// A second prompt run beside the first, for the comparison view (None: off).
    pub compare_prompt: Option<String>,
}

impl Runs {
    pub fn new(device: DeviceChoice, image: Option<PathBuf>, settings: &Settings) -> Self {
        Self {
            device,
            analysis_device: create_device(device).ok().map(|d| d.device),
            loading: JobSlot::new("model loading"),
            running: JobSlot::new("model run"),
            model: None,
            prompt: settings
                .last_prompt
                .clone()
                .unwrap_or_else(|| DEFAULT_PROMPT.to_string()),
            sent_prompt: None,
            last_edit: None,
            image,
            next_run: 0,
            corpus_path: None,
            corpus_running: false,
            edits: Vec::new(),
            gradients: None,
            generate: None,
            compare_prompt: None,
        }
    }

    pub fn analysis_device(&self) -> Option<&Device> {
        self.analysis_device.as_ref()
    }

    /// The model being loaded, if one is.
    pub fn loading(&self) -> Option<&String> {
        self.loading.key()
    }

    pub fn takes_images(&self) -> bool {
        self.model.as_ref().is_some_and(|m| m.model.takes_images())
    }

    /// What the progress bar shows while a model loads or runs.
    pub fn busy(&self) -> Option<Progress> {
        let (default, progress) = match (self.loading.key(), self.running.progress()) {
            (Some(spec), _) => (format!("loading {spec}"), self.loading.progress()),
            (None, Some(p)) => ("running".to_string(), Some(p)),
            (None, None) => return None,
        };
        let mut progress = progress.unwrap_or_default();
        if progress.message.is_empty() {
            progress.message = default;
        }
        Some(progress)
    }

    /// A one-line summary of the loaded model.
    pub fn summary(&self) -> String {
        self.model.as_ref().map_or(String::new(), |m| {
            let c = &m.model.config;
            format!(
                "{}: {} layers x {} heads ({} kv), d = {}",
                c.model_type, c.layers, c.heads, c.kv_heads, c.head_dim
            )
        })
    }

    pub fn device_label(&self) -> &str {
        self.model.as_ref().map_or("", |m| m.device.as_str())
    }

    /// The prompt on screen is what the document shows: no run is due.
    pub fn prompt_ran(&mut self) {
        self.sent_prompt = Some(self.prompt.clone());
        self.last_edit = None;
    }

    /// Cancels a corpus run at the next layer of its pass; the document on screen stays.
    pub fn cancel_corpus(&mut self) {
        self.running.cancel();
    }

    /// Whether a model run (not a load) is under way.
    pub fn running(&self) -> bool {
        self.running.busy()
    }

    /// Cancels the run under way at the next layer of its pass (or the next generated token);
    /// the document on screen stays.
    pub fn cancel_run(&mut self) {
        self.running.cancel();
        self.corpus_running = false;
    }
}

/// The largest text file the window takes as a prompt: far past any model's positions.
const PROMPT_FILE_LIMIT: u64 = 16 << 20;

/// A text file's content as a prompt, or why not.
pub fn read_prompt_file(path: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context;
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if size > PROMPT_FILE_LIMIT {
        anyhow::bail!(
            "{}: {} MiB is more text than a prompt takes (at most {} MiB)",
            path.display(),
            size >> 20,
            PROMPT_FILE_LIMIT >> 20
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {} as UTF-8 text", path.display()))?;
    if text.trim().is_empty() {
        anyhow::bail!("{}: the file is empty", path.display());
    }
    Ok(text)
}

/// Whether a file's name says it is text to take as the prompt.
pub fn is_text_file(path: &std::path::Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["txt", "md", "text"].contains(&e.to_ascii_lowercase().as_str()))
}

impl HeadwiseApp {
    pub(super) fn load_model(&mut self, spec: &str, run_after: bool) {
        // The model that goes is dropped first: two models need not fit at once.
        self.runs.model = None;
        let (spec, choice) = (spec.to_string(), self.runs.device);
        self.runs
            .loading
            .start(spec.clone(), &self.repaint, move |cx| {
                load(&spec, choice, &|message: &str, fraction| {
                    cx.progress(message, fraction)
                })
                .map_err(|e| format!("{e:#}"))
            });
        if run_after {
            self.runs.sent_prompt = None;
            self.runs.last_edit = Some(Instant::now() - DEBOUNCE);
        } else {
            self.runs.sent_prompt = Some(self.runs.prompt.clone());
        }
    }

    pub(super) fn open_model_spec(&mut self, spec: String) {
        self.files.settings.remember_model(&spec);
        let _ = self.files.settings.save();
        self.load_model(&spec, true);
    }

    /// Adds an edit (switched on) and runs the prompt again with it.
    pub(super) fn add_edit(&mut self, spec: String) {
        if !self.runs.edits.iter().any(|(s, _)| *s == spec) {
            self.runs.edits.push((spec, true));
        }
        self.request_run();
    }

    /// Runs the prompt (or the picture, for an image model).
    pub(super) fn request_run(&mut self) {
        self.runs.sent_prompt = Some(self.runs.prompt.clone());
        let Some(loaded) = self.runs.model.clone() else {
            self.messages.error = Some("no model is loaded".into());
            return;
        };
        let inputs = if loaded.model.takes_images() {
            match &self.runs.image {
                Some(image) => Inputs::Images(vec![image.clone()]),
                None => {
                    self.messages.info =
                        "An image model: open a picture or drop one on the window.".into();
                    return;
                }
            }
        } else {
            let mut texts = vec![self.runs.prompt.clone()];
            if let Some(second) = self
                .runs
                .compare_prompt
                .as_ref()
                .filter(|t| !t.trim().is_empty())
            {
                texts.push(second.clone());
            }
            Inputs::Texts(texts)
        };
        let edits = if loaded.model.takes_images() {
            Vec::new()
        } else {
            self.runs
                .edits
                .iter()
                .filter(|(_, on)| *on)
                .filter_map(|(spec, _)| spec.parse().ok())
                .collect()
        };
        let gradients = match self.runs.gradients.as_deref().map(str::trim) {
            None => None,
            Some("") => Some(TargetChoice::Top),
            Some(spec) => match loaded.model.target_choice(spec) {
                Ok(choice) => Some(choice),
                Err(e) => {
                    self.messages.error = Some(format!("gradient target {spec:?}: {e}"));
                    return;
                }
            },
        };
        let options = RunOptions {
            long: LongInput::Reject,
            pack_tokens: loaded.pack_tokens,
            keep_traces: true,
            capture: AttentionCapture::default(),
            edits,
            generate: self
                .runs
                .generate
                .filter(|_| loaded.model.is_decoder() && !loaded.model.takes_images()),
            gradients,
        };
        self.start_run(loaded, inputs, options, false);
    }

    fn start_run(
        &mut self,
        loaded: Arc<LoadedModel>,
        inputs: Inputs,
        options: RunOptions,
        corpus: bool,
    ) {
        let id = self.runs.next_run;
        self.runs.next_run += 1;
        self.runs.corpus_running = corpus;
        self.runs.running.start(id, &self.repaint, move |cx| {
            let start = Instant::now();
            let run = pipeline::run(&loaded.model, &loaded.spec, &inputs, &options, &mut |p| {
                // Layer by layer, so that a long prompt's bar moves and Cancel acts within its
                // pass; a cancelled run reports nothing more.
                if cx.cancelled() {
                    return false;
                }
                cx.progress(p.to_string(), Some(p.fraction()));
                true
            })
            .map_err(|e| format!("{e:#}"))?;
            let device_attention = device_attention(&run.traces);
            Ok(Ran {
                session: run.session,
                device_attention,
                took: start.elapsed(),
                corpus,
            })
        });
    }

    /// Runs the image model on a picture (chosen, dropped or given on the command line).
    pub(super) fn run_image(&mut self, path: PathBuf) {
        if self.runs.loading().is_none()
            && let Some(loaded) = &self.runs.model
            && !loaded.model.takes_images()
        {
            // Running the text prompt instead would look like the picture was taken.
            self.messages.error = Some(format!(
                "{} is a picture, and {} is a text model: open an image model (dinov2-s, a ViT \
                 folder or ONNX file) to run it",
                path.display(),
                loaded.spec
            ));
            return;
        }
        self.runs.image = Some(path);
        if self.runs.loading().is_some() {
            // The run follows the load.
            self.runs.sent_prompt = None;
            self.runs.last_edit = Some(Instant::now() - DEBOUNCE);
            return;
        }
        self.request_run();
    }

    /// Takes a text file's content as the prompt and runs it at once.
    pub(super) fn open_prompt_file(&mut self, path: &std::path::Path) {
        match read_prompt_file(path) {
            Ok(text) => {
                self.runs.prompt = text;
                self.runs.last_edit = Some(Instant::now() - DEBOUNCE);
            }
            Err(e) => self.messages.error = Some(format!("{e:#}")),
        }
    }

    pub(super) fn ask_open_prompt_file(&mut self) {
        if let Some(path) = rfd::FileDialog::new()
            .add_filter("text", &["txt", "md", "text"])
            .pick_file()
        {
            self.open_prompt_file(&path);
        }
    }

    pub(super) fn ask_open_image(&mut self) {
        if let Some(path) = rfd::FileDialog::new()
            .add_filter("image", &["png", "jpg", "jpeg", "webp"])
            .pick_file()
        {
            self.run_image(path);
        }
    }

    /// Runs the corpus (its first `corpus_lines` inputs) as a new document.
    pub(super) fn run_corpus(&mut self) {
        let Some(loaded) = self.runs.model.clone() else {
            return;
        };
        let takes_images = loaded.model.takes_images();
        match crate::corpus::read(self.runs.corpus_path.as_deref(), self.view.qk.corpus_lines) {
            Ok(corpus) => {
                if takes_images && corpus.images.is_empty() {
                    self.messages.error =
                        Some("An image model: choose a folder of pictures as the corpus.".into());
                    return;
                }
                if !takes_images && corpus.texts.is_empty() {
                    self.messages.error = Some(
                        "A text model: choose a text file (one input per line) as the corpus."
                            .into(),
                    );
                    return;
                }
                let options = corpus_options(loaded.pack_tokens);
                self.start_run(loaded, corpus.inputs(takes_images), options, true);
            }
            Err(e) => self.messages.error = Some(format!("{e:#}")),
        }
    }

    /// Each frame: the load and run results, and the debounced re-run of an edited prompt.
    pub(super) fn poll_runs(&mut self, ctx: &egui::Context) {
        if let Some((spec, loaded)) = self.runs.loading.poll() {
            match loaded {
                Ok(model) => {
                    self.runs.model = Some(model.clone());
                    self.files.settings.remember_model(&spec);
                    let _ = self.files.settings.save();
                    self.messages.info = format!("loaded {spec}");
                    self.fit_choices_to(&model.model);
                }
                Err(error) => {
                    self.messages.error = Some(format!("could not load {spec}: {error}"));
                    // No run follows a failed load: it would only replace this message with
                    // "no model is loaded".
                    self.runs.last_edit = None;
                }
            }
        }
        match self.runs.running.poll() {
            Some((_, Ok(ran))) => self.show_run(ran),
            Some((_, Err(error))) => {
                self.runs.corpus_running = false;
                self.messages.error = Some(error);
            }
            None => {}
        }
        if self.runs.corpus_running && !self.runs.running.busy() {
            self.runs.corpus_running = false;
            self.messages.info = "corpus run cancelled; the document on screen stays".into();
        }
        self.debounce(ctx);
    }

    /// Undoes the choices made for the model that went which mean nothing (or something else)
    /// in `model`, saying so in the status line.
    fn fit_choices_to(&mut self, model: &Model) {
        // A typed target is a token id or class of the model that went.
        if let Some(target) = self.runs.gradients.as_mut()
            && !target.trim().is_empty()
        {
            target.clear();
            self.messages.info += "; the gradient target is back to the most likely";
        }
        // Edits naming a layer or head this model lacks would refuse every run.
        let (layers, heads) = (model.config.layers, model.config.heads);
        let mut off = 0;
        for (spec, on) in &mut self.runs.edits {
            let fits = spec
                .parse::<Edit>()
                .is_ok_and(|edit| edit.check(layers, heads, usize::MAX).is_ok());
            if *on && !fits {
                *on = false;
                off += 1;
            }
        }
        if off > 0 {
            let edits = if off == 1 { "edit" } else { "edits" };
            self.messages.info += &format!(
                "; {off} {edits} switched off: this model has {layers} layers of {heads} heads"
            );
        }
    }

    fn show_run(&mut self, ran: Ran) {
        self.runs.corpus_running = false;
        self.messages.error = None;
        let session = ran.session;
        let tokens = session.meta.inputs.first().map_or(0, |i| i.tokens.len());
        self.messages.info = if ran.corpus {
            format!(
                "corpus: {} inputs, {} tokens in {:.1} s",
                session.meta.inputs.len(),
                session.corpus_tokens(),
                ran.took.as_secs_f64()
            )
        } else {
            format!(
                "{tokens} tokens in {:.0} ms",
                ran.took.as_secs_f64() * 1000.0
            )
        };
        self.set_document(session, ran.device_attention, None);
        let in_place = self.doc.as_ref().map_or(0, |d| d.layers_in_place());
        if in_place > 0 {
            self.messages.info += &format!(
                "; {in_place} layers of attention drawn from the GPU where they were computed"
            );
        }
        if ran.corpus {
            self.view.tab = Tab::Qk;
            self.view.input = 0;
        } else if let Some(doc) = &self.doc
            && let Some(edited) = doc
                .session
                .meta
                .inputs
                .iter()
                .position(|i| i.base.is_some())
        {
            // An edited run opens on itself, compared with its base.
            self.view.input = edited;
        }
        if !ran.corpus
            && let Some(doc) = &self.doc
        {
            // Two prompts: the Compare tab puts the second's run with the same edits beside
            // the one on screen.
            let inputs = &doc.session.meta.inputs;
            let prompts: Vec<usize> = (0..inputs.len())
                .filter(|&i| inputs[i].base.is_none())
                .collect();
            if let [_, second] = prompts[..] {
                let shown = &inputs[self.view.input.min(inputs.len() - 1)];
                self.view.compare.other = (second..inputs.len())
                    .find(|&i| inputs[i].edits == shown.edits)
                    .unwrap_or(second);
            }
        }
        self.files.run_unsaved = true;
        self.files.settings.last_prompt = Some(self.runs.prompt.clone());
        let _ = self.files.settings.save();
    }

    /// Re-runs once typing pauses and the text differs from what last ran.
    fn debounce(&mut self, ctx: &egui::Context) {
        let Some(edited) = self.runs.last_edit else {
            return;
        };
        let waited = edited.elapsed();
        if waited < DEBOUNCE || self.runs.loading().is_some() {
            ctx.request_repaint_after(
                DEBOUNCE
                    .saturating_sub(waited)
                    .max(Duration::from_millis(20)),
            );
            return;
        }
        self.runs.last_edit = None;
        if self.runs.sent_prompt.as_deref() == Some(self.runs.prompt.as_str()) {
            return;
        }
        if !self.runs.takes_images() && self.runs.prompt.trim().is_empty() {
            self.messages.error = Some("The prompt is empty.".into());
        } else if self.files.dirty() && self.doc.as_ref().is_some_and(|d| d.inputs() > 1) {
            // A corpus run is minutes of work: ask before a prompt replaces it.
            self.runs.sent_prompt = Some(self.runs.prompt.clone());
            self.files.pending = Some(Pending::RunPrompt);
        } else {
            self.request_run();
        }
    }
}

/// How the window runs a corpus: an overlong line keeps its first tokens (a prompt says it is
/// too long instead), packed as `headwise trace` packs on this device.
pub fn corpus_options(pack_tokens: usize) -> RunOptions {
    RunOptions {
        long: LongInput::Truncate,
        pack_tokens,
        keep_traces: true,
        capture: AttentionCapture::default(),
        edits: Vec::new(),
        generate: None,
        gradients: None,
    }
}

/// Resolves (fetching if needed) and loads a model, telling `progress` how it goes.
fn load(
    spec: &str,
    choice: DeviceChoice,
    progress: &dyn Fn(&str, Option<f32>),
) -> anyhow::Result<Arc<LoadedModel>> {
    let path = resolve_model(spec, progress)?;
    let device = create_device(choice)?;
    progress(&format!("loading {spec}"), Some(0.0));
    let model = Model::load(&path, &device.device, &|f| {
        progress(&format!("loading {spec}"), Some(f))
    })
    .map_err(|e| anyhow::anyhow!("loading model {spec}: {e}"))?;
    Ok(Arc::new(LoadedModel {
        spec: spec.to_string(),
        model,
        device: device.description,
        pack_tokens: default_pack_tokens(device.is_gpu),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gui::app::StartOptions;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(name)
    }

    /// CI's soak test once met a token id typed as the target for a text model, taken by the
    /// image model loaded next for one of its classes ("class 65 is outside the model's 5
    /// classes"), and every picture refused.
    #[test]
    fn a_loaded_model_drops_a_typed_target_and_the_edits_it_has_no_place_for() {
        let ctx = egui::Context::default();
        let cc = eframe::CreationContext::_new_kittest(ctx);
        let mut app = HeadwiseApp::new(
            &cc,
            StartOptions {
                model: Some(fixture("tiny-llama").display().to_string()),
                device: DeviceChoice::Cpu,
                ..Default::default()
            },
        );
        app.runs.gradients = Some("65".into());
        app.runs.edits = vec![
            ("ablate:7.0".into(), true),
            ("ablate:1.1".into(), true),
            ("scale:*.*:0=0.5".into(), true),
        ];
        let device = create_device(DeviceChoice::Cpu).unwrap();
        let image_model = Model::load(&fixture("tiny-dinov2"), &device.device, &|_| {}).unwrap();
        let (layers, heads) = (image_model.config.layers, image_model.config.heads);
        assert!(layers < 8 && layers > 1 && heads > 1);
        app.fit_choices_to(&image_model);
        assert_eq!(app.runs.gradients.as_deref(), Some(""), "most likely again");
        let on: Vec<bool> = app.runs.edits.iter().map(|(_, on)| *on).collect();
        assert_eq!(on, [false, true, true]);
        assert!(app.messages.info.contains("1 edit switched off"));
    }

    /// Calls `poll_runs` as the window's frames would until `done` says so.
    fn frames_until(
        app: &mut HeadwiseApp,
        ctx: &egui::Context,
        done: impl Fn(&HeadwiseApp) -> bool,
    ) {
        let give_up = Instant::now() + Duration::from_secs(300);
        while !done(app) {
            assert!(Instant::now() < give_up, "the window never got there");
            app.poll_runs(ctx);
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn cancel_stops_a_long_prompts_pass_between_two_layers_and_keeps_what_is_on_screen() {
        // The tiny Llama allowed 8,192 positions: a pass of about 8k tokens takes seconds.
        let folder = std::env::temp_dir().join(format!("headwise-cancel-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        for entry in std::fs::read_dir(fixture("tiny-llama")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), folder.join(entry.file_name())).unwrap();
        }
        let config_path = folder.join("config.json");
        let config = std::fs::read_to_string(&config_path).unwrap();
        let config = config.replace(
            "\"max_position_embeddings\": 64",
            "\"max_position_embeddings\": 8192",
        );
        std::fs::write(&config_path, config).unwrap();

        let ctx = egui::Context::default();
        let cc = eframe::CreationContext::_new_kittest(ctx.clone());
        let mut app = HeadwiseApp::new(
            &cc,
            StartOptions {
                model: Some(folder.display().to_string()),
                device: DeviceChoice::Cpu,
                ..Default::default()
            },
        );
        frames_until(&mut app, &ctx, |app| {
            app.runs.model.is_some() && !app.runs.running()
        });
        let on_screen = app.doc.clone();
        app.runs.prompt = ["a b c d e f g h"; 560].join(" ");
        app.request_run();
        let layers = app.runs.model.as_ref().unwrap().model.config.layers;
        let first = format!("layer 1 of {layers}");
        frames_until(&mut app, &ctx, |app| {
            app.runs.busy().is_some_and(|p| p.message == first)
        });
        app.runs.cancel_run();
        let mut seen = Vec::new();
        while app.runs.running() {
            if let Some(p) = app.runs.busy()
                && seen.last() != Some(&p.message)
            {
                seen.push(p.message);
            }
            app.poll_runs(&ctx);
            std::thread::sleep(Duration::from_millis(2));
        }
        let last = format!("layer {layers} of {layers}");
        assert!(
            !seen.contains(&last),
            "the pass went on to its last layer: {seen:?}"
        );
        let same = match (&app.doc, &on_screen) {
            (Some(now), Some(before)) => Arc::ptr_eq(now, before),
            (now, before) => now.is_none() && before.is_none(),
        };
        assert!(same, "a cancelled run leaves the document on screen");
        assert_eq!(app.messages.error, None);
        let _ = std::fs::remove_dir_all(&folder);
    }
}

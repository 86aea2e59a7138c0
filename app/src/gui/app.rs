//! The window: a model panel and a prompt editor on the left, the views in tabs in the middle,
//! menus, shortcuts, dialogs. It owns the open document and the view state; the engine runs on
//! the worker thread, the drawing in the renderer.

use super::export::{self, ExportJob};
use super::projector::{ProjectJob, Projector};
use super::settings::Settings;
use super::worker::{Job, Report, Worker};
use crate::document::{DeviceAttention, Document};
use crate::render::heatmap::HeatmapResources;
use crate::render::offscreen::Offscreen;
use crate::render::scatter::ScatterResources;
use crate::views::head;
use crate::views::image as image_view;
use crate::views::lines;
use crate::views::overview::{self, OverviewAction};
use crate::views::qk::{self, QkAction};
use crate::views::state::{Tab, ViewState};
use eframe::egui;
use headwise_engine::analysis::projection::Method;
use headwise_engine::device::DeviceChoice;
use headwise_engine::locate::{KNOWN_MODELS, fetched_path};
use headwise_engine::session::Session;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const DEFAULT_MODEL: &str = "minilm";
pub const DEFAULT_PROMPT: &str = "The cat sat on the mat because it was tired.";
/// How long typing must pause before the model runs again.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// How the window was started.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    pub session: Option<PathBuf>,
    pub model: Option<String>,
    /// A picture for an image model.
    pub image: Option<PathBuf>,
    pub device: DeviceChoice,
    /// Save a screenshot of the window here once the first document is on screen, then quit
    /// (for tests and the README's pictures).
    pub screenshot: Option<PathBuf>,
}

/// Something that would discard unsaved work, waiting for the user to confirm.
enum Pending {
    Close,
    OpenSession(PathBuf),
    /// An edited prompt would replace an unsaved corpus run.
    RunPrompt,
}

/// A picture of the window, asked of eframe and saved when it arrives.
#[derive(Clone)]
struct ScreenshotRequest {
    path: PathBuf,
    /// Quit once it is saved (the `--screenshot` start option).
    quit_after: bool,
    requested: bool,
}

struct Status {
    message: String,
    fraction: Option<f32>,
}

pub struct HeadwiseApp {
    worker: Worker,
    projector: Projector,
    /// The corpus file or picture folder for the query-key view (None: the default corpus).
    corpus_path: Option<PathBuf>,
    /// The run awaited is a corpus (its result opens the query-key view).
    corpus_running: bool,
    /// The projection store's change count when the session was last saved or opened.
    projections_seen: u64,
    settings: Settings,
    doc: Option<Arc<Document>>,
    /// Where documents compute their slider-driven analyses: the device the user chose.
    analysis_device: Option<headwise_engine::device::Device>,
    view: ViewState,
    prompt: String,
    sent_prompt: Option<String>,
    /// The loaded model takes pictures rather than text.
    takes_images: bool,
    /// The picture an image model runs on.
    image: Option<PathBuf>,
    last_edit: Option<Instant>,
    next_run: u64,
    awaited_run: Option<u64>,
    model: Option<String>,
    model_summary: String,
    device: String,
    loading: Option<String>,
    busy: Option<Status>,
    /// The last failure, shown until the next success; the last good result stays on screen.
    error: Option<String>,
    info: String,
    session_path: Option<PathBuf>,
    dirty: bool,
    pending: Option<Pending>,
    close_confirmed: bool,
    show_help: bool,
    export: Option<ExportJob>,
    render_device: Option<(
        eframe::egui_wgpu::wgpu::Device,
        eframe::egui_wgpu::wgpu::Queue,
    )>,
    screenshot: Option<ScreenshotRequest>,
    screenshots: (
        std::sync::mpsc::Sender<Arc<egui::ColorImage>>,
        std::sync::mpsc::Receiver<Arc<egui::ColorImage>>,
    ),
    frames: u32,
    /// The window title last sent, so it is only sent again when it changes.
    title: String,
    started: Instant,
}

impl HeadwiseApp {
    pub fn new(cc: &eframe::CreationContext<'_>, options: StartOptions) -> Self {
        let render_device = cc.wgpu_render_state.as_ref().map(|rs| {
            let mut renderer = rs.renderer.write();
            HeatmapResources::install(
                &mut renderer.callback_resources,
                &rs.device,
                rs.target_format,
            );
            ScatterResources::install(
                &mut renderer.callback_resources,
                &rs.device,
                rs.target_format,
            );
            (rs.device.clone(), rs.queue.clone())
        });
        let settings = Settings::load();
        let mut app = Self {
            worker: Worker::start(cc.egui_ctx.clone(), options.device),
            analysis_device: headwise_engine::device::create_device(options.device)
                .ok()
                .map(|d| d.device),
            projector: Projector::start(cc.egui_ctx.clone(), options.device),
            corpus_path: None,
            corpus_running: false,
            projections_seen: 0,
            prompt: settings
                .last_prompt
                .clone()
                .unwrap_or_else(|| DEFAULT_PROMPT.to_string()),
            settings,
            doc: None,
            view: ViewState::default(),
            sent_prompt: None,
            takes_images: false,
            image: options.image.clone(),
            last_edit: None,
            next_run: 0,
            awaited_run: None,
            model: None,
            model_summary: String::new(),
            device: String::new(),
            loading: None,
            busy: None,
            error: None,
            info: String::new(),
            session_path: None,
            dirty: false,
            pending: None,
            close_confirmed: false,
            show_help: false,
            export: None,
            render_device,
            screenshot: options.screenshot.clone().map(|path| ScreenshotRequest {
                path,
                quit_after: true,
                requested: false,
            }),
            frames: 0,
            title: String::new(),
            started: Instant::now(),
            screenshots: std::sync::mpsc::channel(),
        };
        let session = options.session.clone().or_else(|| {
            (options.model.is_none())
                .then(|| app.settings.last_session.clone())
                .flatten()
                .filter(|p| p.exists())
        });
        let mut run_prompt = true;
        if let Some(path) = session {
            run_prompt = false;
            if let Err(e) = app.open_session(&path) {
                eprintln!("error: {e:#}");
            }
        }
        let model = options
            .model
            .clone()
            .or_else(|| {
                app.doc
                    .as_ref()
                    .map(|d| d.session.meta.model.source.clone())
            })
            .or_else(|| app.settings.last_model.clone())
            .unwrap_or_else(|| DEFAULT_MODEL.to_string());
        // With a session on screen, the model loads in the background for new prompts but the
        // session's own results are not recomputed.
        app.load_model(&model, run_prompt);
        app
    }

    fn load_model(&mut self, spec: &str, run_after: bool) {
        self.loading = Some(spec.to_string());
        self.busy = Some(Status {
            message: format!("loading {spec}"),
            fraction: None,
        });
        self.worker.send(Job::Load {
            spec: spec.to_string(),
        });
        if run_after {
            self.sent_prompt = None;
            self.last_edit = Some(Instant::now() - DEBOUNCE);
        } else {
            self.sent_prompt = Some(self.prompt.clone());
        }
    }

    fn request_run(&mut self) {
        self.sent_prompt = Some(self.prompt.clone());
        if self.takes_images && self.image.is_none() {
            self.busy = None;
            self.info = "An image model: open a picture or drop one on the window.".into();
            return;
        }
        let id = self.next_run;
        self.next_run += 1;
        self.awaited_run = Some(id);
        self.worker.send(Job::Run {
            id,
            texts: vec![self.prompt.clone()],
            images: self.image.iter().cloned().collect(),
        });
    }

    /// Runs the image model on a picture (chosen, dropped or given on the command line).
    fn run_image(&mut self, path: PathBuf) {
        self.image = Some(path);
        if self.loading.is_some() {
            // The run follows the load.
            self.sent_prompt = None;
            self.last_edit = Some(Instant::now() - DEBOUNCE);
            return;
        }
        self.request_run();
        self.busy = Some(Status {
            message: "running".into(),
            fraction: None,
        });
    }

    fn ask_open_image(&mut self) {
        if let Some(path) = rfd::FileDialog::new()
            .add_filter("image", &["png", "jpg", "jpeg", "webp"])
            .pick_file()
        {
            self.run_image(path);
        }
    }

    fn set_document(
        &mut self,
        session: Session,
        device_attention: DeviceAttention,
        view: Option<ViewState>,
    ) {
        let mut doc = Document::new(session).with_device_attention(device_attention);
        if let Some(device) = &self.analysis_device {
            doc = doc.with_analysis_device(device.clone());
        }
        let was_picture = self
            .doc
            .as_ref()
            .is_some_and(|d| image_view::is_image(d, self.view.input));
        let restored = view.is_some();
        let mut view = view.unwrap_or_else(|| self.view.clone());
        // A first picture opens on the image view; a text input cannot show it.
        let picture = image_view::is_image(&doc, view.input.min(doc.inputs().saturating_sub(1)));
        if picture && !was_picture && !restored {
            view.tab = Tab::Image;
        } else if !picture && view.tab == Tab::Image {
            view.tab = Tab::Overview;
        }
        if view.tab == Tab::Qk && !qk::available(&doc) {
            view.tab = Tab::Overview;
        }
        view.clamp_to(doc.inputs(), doc.layers(), doc.heads());
        if view
            .qk
            .selected
            .is_some_and(|q| q >= doc.session.corpus_tokens())
        {
            view.qk.selected = None;
        }
        self.projections_seen = doc.projections.changes();
        if view.input != self.view.input || view.layer != self.view.layer {
            view.window = None;
        }
        self.view = view;
        let doc = Arc::new(doc);
        doc.start_metrics();
        self.doc = Some(doc);
    }

    /// Opens a session file: inputs, attention and view state, without running the model.
    pub fn open_session(&mut self, path: &Path) -> anyhow::Result<()> {
        let opened = Session::open(path);
        let session = match opened {
            Ok(s) => s,
            Err(e) => {
                self.error = Some(format!("{e}"));
                return Err(e.into());
            }
        };
        // A session saved without a view state opens as a fresh run would.
        let view = (!session.meta.view.is_null()).then(|| ViewState::from_json(&session.meta.view));
        if let Some(text) = session.meta.inputs.first().and_then(|i| i.text.clone()) {
            self.prompt = text.clone();
            self.sent_prompt = Some(text);
        }
        self.last_edit = None;
        self.set_document(session, Vec::new(), view);
        self.session_path = Some(path.to_path_buf());
        self.dirty = false;
        self.error = None;
        self.info = format!("opened {}", path.display());
        self.settings.remember_session(path);
        let _ = self.settings.save();
        Ok(())
    }

    fn save_session(&mut self, path: &Path) {
        let Some(doc) = &self.doc else {
            return;
        };
        let mut session = doc.session.clone();
        session.meta.view = self.view.to_json();
        doc.projections.write_into(&mut session);
        let changes = doc.projections.changes();
        match session.save(path, session.dtype) {
            Ok(()) => {
                self.session_path = Some(path.to_path_buf());
                self.dirty = false;
                self.projections_seen = changes;
                self.info = format!("saved {}", path.display());
                self.settings.remember_session(path);
                let _ = self.settings.save();
            }
            Err(e) => self.error = Some(format!("saving failed, nothing was overwritten: {e}")),
        }
    }

    fn save(&mut self) {
        match self.session_path.clone() {
            Some(p) => self.save_session(&p),
            None => self.save_as(),
        }
    }

    fn save_as(&mut self) {
        if self.doc.is_none() {
            return;
        }
        if let Some(path) = rfd::FileDialog::new()
            .add_filter("headwise session", &["safetensors"])
            .set_file_name("session.safetensors")
            .save_file()
        {
            self.save_session(&path);
        }
    }

    fn ask_open_session(&mut self) {
        if let Some(path) = rfd::FileDialog::new()
            .add_filter("headwise session", &["safetensors"])
            .pick_file()
        {
            self.open_session_checked(path);
        }
    }

    fn open_session_checked(&mut self, path: PathBuf) {
        if self.dirty {
            self.pending = Some(Pending::OpenSession(path));
        } else {
            let _ = self.open_session(&path);
        }
    }

    fn open_model_spec(&mut self, spec: String) {
        self.settings.remember_model(&spec);
        let _ = self.settings.save();
        self.load_model(&spec, true);
    }

    /// A dropped or chosen path: a session, a picture, or a model folder or file.
    fn open_path(&mut self, path: PathBuf) {
        let is_session = path.extension().is_some_and(|e| e == "safetensors")
            && path.file_name().is_some_and(|n| n != "model.safetensors");
        let is_picture = path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
            ["png", "jpg", "jpeg", "webp"].contains(&e.to_ascii_lowercase().as_str())
        });
        if is_picture {
            self.run_image(path);
        } else if is_session {
            self.open_session_checked(path);
        } else {
            self.open_model_spec(path.display().to_string());
        }
    }

    fn handle_reports(&mut self) {
        let reports: Vec<Report> = self.worker.reports().collect();
        for report in reports {
            match report {
                Report::Progress { message, fraction } => {
                    self.busy = Some(Status { message, fraction })
                }
                Report::Loaded {
                    spec,
                    summary,
                    device,
                    takes_images,
                } => {
                    self.busy = None;
                    self.loading = None;
                    self.takes_images = takes_images;
                    self.model = Some(spec.clone());
                    self.model_summary = summary;
                    self.device = device;
                    self.settings.remember_model(&spec);
                    let _ = self.settings.save();
                    self.info = format!("loaded {spec}");
                }
                Report::LoadFailed { spec, error } => {
                    self.busy = None;
                    self.loading = None;
                    self.error = Some(format!("could not load {spec}: {error}"));
                }
                Report::Ran {
                    id,
                    session,
                    device_attention,
                    took,
                } => {
                    if Some(id) == self.awaited_run {
                        self.awaited_run = None;
                        self.busy = None;
                        self.error = None;
                        let tokens = session.meta.inputs.first().map_or(0, |i| i.tokens.len());
                        self.info =
                            format!("{tokens} tokens in {:.0} ms", took.as_secs_f64() * 1000.0);
                        let corpus = std::mem::take(&mut self.corpus_running);
                        if corpus {
                            self.info = format!(
                                "corpus: {} inputs, {} tokens in {:.1} s",
                                session.meta.inputs.len(),
                                session.corpus_tokens(),
                                took.as_secs_f64()
                            );
                        }
                        self.set_document(session, device_attention, None);
                        let in_place = self.doc.as_ref().map_or(0, |d| d.layers_in_place());
                        if in_place > 0 {
                            self.info += &format!(
                                "; {in_place} layers of attention drawn from the GPU where \
                                 they were computed"
                            );
                        }
                        if corpus {
                            self.view.tab = Tab::Qk;
                            self.view.input = 0;
                        }
                        self.dirty = true;
                        self.settings.last_prompt = Some(self.prompt.clone());
                        let _ = self.settings.save();
                    }
                }
                Report::RunFailed { id, error } => {
                    if Some(id) == self.awaited_run {
                        self.awaited_run = None;
                        self.corpus_running = false;
                        self.busy = None;
                        self.error = Some(error);
                    }
                }
            }
        }
    }

    fn shortcuts(&mut self, ctx: &egui::Context) {
        use egui::{Key, KeyboardShortcut, Modifiers};
        let cmd = |k| KeyboardShortcut::new(Modifiers::COMMAND, k);
        let cmd_shift = |k| KeyboardShortcut::new(Modifiers::COMMAND | Modifiers::SHIFT, k);
        if ctx.input_mut(|i| i.consume_shortcut(&cmd_shift(Key::S))) {
            self.save_as();
        }
        if ctx.input_mut(|i| i.consume_shortcut(&cmd(Key::S))) {
            self.save();
        }
        if ctx.input_mut(|i| i.consume_shortcut(&cmd(Key::O))) {
            self.ask_open_session();
        }
        if ctx.input_mut(|i| i.consume_shortcut(&cmd(Key::M))) {
            self.ask_open_model_folder();
        }
        if ctx.input_mut(|i| i.consume_shortcut(&cmd(Key::E))) {
            self.export_view_dialog(ctx);
        }
        if ctx.input_mut(|i| i.consume_shortcut(&cmd_shift(Key::E))) {
            self.export_window_dialog(ctx);
        }
        if ctx.input_mut(|i| i.consume_key(Modifiers::NONE, Key::F1)) {
            self.show_help = !self.show_help;
        }
        if ctx.egui_wants_keyboard_input() {
            return;
        }
        let Some(doc) = &self.doc else { return };
        let (layers, heads) = (doc.layers(), doc.heads());
        let pressed = |k| ctx.input(|i| i.key_pressed(k));
        let before = (self.view.layer, self.view.head);
        if pressed(Key::ArrowLeft) {
            self.view.step(0, -1, layers, heads);
        }
        if pressed(Key::ArrowRight) {
            self.view.step(0, 1, layers, heads);
        }
        if pressed(Key::ArrowUp) {
            self.view.step(-1, 0, layers, heads);
        }
        if pressed(Key::ArrowDown) {
            self.view.step(1, 0, layers, heads);
        }
        if before != (self.view.layer, self.view.head) {
            self.view.line_heads.clear();
        }
        if pressed(Key::Num1) {
            self.view.tab = Tab::Overview;
        }
        if pressed(Key::Num2) || pressed(Key::Enter) {
            self.view.tab = Tab::Head;
        }
        if pressed(Key::Num3)
            && self
                .doc
                .as_ref()
                .is_some_and(|d| image_view::is_image(d, self.view.input))
        {
            self.view.tab = Tab::Image;
        }
        if pressed(Key::Num4) && self.doc.as_ref().is_some_and(|d| qk::available(d)) {
            self.view.tab = Tab::Qk;
        }
        if ctx.input(|i| {
            i.key_pressed(Key::Questionmark) || (i.modifiers.shift && i.key_pressed(Key::Slash))
        }) {
            self.show_help = !self.show_help;
        }
        if pressed(Key::Escape) {
            self.show_help = false;
        }
    }

    fn ask_open_model_folder(&mut self) {
        if let Some(dir) = rfd::FileDialog::new().pick_folder() {
            self.open_model_spec(dir.display().to_string());
        }
    }

    fn ask_open_model_file(&mut self) {
        if let Some(file) = rfd::FileDialog::new()
            .add_filter("model", &["gguf", "onnx"])
            .pick_file()
        {
            self.open_model_spec(file.display().to_string());
        }
    }

    fn offscreen(&self, ctx: &egui::Context) -> Option<Offscreen> {
        let (device, queue) = self.render_device.clone()?;
        Some(Offscreen::new(
            device,
            queue,
            ctx.global_style().visuals.clone(),
        ))
    }

    /// The current view as a PNG at twice the screen's resolution.
    fn export_view_dialog(&mut self, ctx: &egui::Context) {
        let (Some(doc), Some(mut offscreen)) = (self.doc.clone(), self.offscreen(ctx)) else {
            return;
        };
        let Some(path) = rfd::FileDialog::new()
            .add_filter("PNG", &["png"])
            .set_file_name(export::view_file_name(&self.view))
            .save_file()
        else {
            return;
        };
        let size = ctx.content_rect().size();
        let ppp = ctx.pixels_per_point() * 2.0;
        let mut view = self.view.clone();
        match export::render_view(&mut offscreen, &doc, &mut view, size, ppp)
            .and_then(|img| export::save_png(&img, &path))
        {
            Ok(()) => self.info = format!("exported {}", path.display()),
            Err(e) => self.error = Some(format!("export failed: {e:#}")),
        }
    }

    fn export_window_dialog(&mut self, ctx: &egui::Context) {
        if let Some(path) = rfd::FileDialog::new()
            .add_filter("PNG", &["png"])
            .set_file_name("headwise-window.png")
            .save_file()
        {
            self.screenshot = Some(ScreenshotRequest {
                path,
                quit_after: false,
                requested: true,
            });
            self.ask_screenshot(ctx);
        }
    }

    /// Asks eframe for a picture of the window; it arrives in a later frame.
    fn ask_screenshot(&self, ctx: &egui::Context) {
        let send = self.screenshots.0.clone();
        let repaint = ctx.clone();
        ctx.send_viewport_cmd(egui::ViewportCommand::Screenshot(
            egui::ScreenshotCallback::new(move |image| {
                let _ = send.send(image);
                repaint.request_repaint();
            }),
        ));
    }

    fn export_heads_dialog(&mut self, ctx: &egui::Context, whole_model: bool) {
        let (Some(doc), Some(offscreen)) = (self.doc.clone(), self.offscreen(ctx)) else {
            return;
        };
        if let Some(dir) = rfd::FileDialog::new().pick_folder() {
            let layers = if whole_model {
                (0..doc.layers()).collect()
            } else {
                vec![self.view.layer]
            };
            self.export = Some(ExportJob::start(
                offscreen,
                doc,
                self.view.clone(),
                layers,
                dir,
            ));
        }
    }

    fn take_screenshots(&mut self, ctx: &egui::Context) {
        let shots: Vec<Arc<egui::ColorImage>> = self.screenshots.1.try_iter().collect();
        if let (Some(image), Some(request)) = (shots.last(), self.screenshot.clone()) {
            let ScreenshotRequest {
                path,
                quit_after: quit,
                ..
            } = request;
            let rgba = image::RgbaImage::from_raw(
                image.width() as u32,
                image.height() as u32,
                image.as_raw().to_vec(),
            );
            let saved = rgba
                .ok_or_else(|| anyhow::anyhow!("screenshot has the wrong size"))
                .and_then(|img| export::save_png(&img, &path));
            match saved {
                Ok(()) => {
                    self.info = format!("saved {}", path.display());
                    eprintln!("screenshot: {}", path.display());
                }
                Err(e) => {
                    self.error = Some(format!("screenshot failed: {e:#}"));
                    eprintln!("error: screenshot failed: {e:#}");
                }
            }
            self.screenshot = None;
            if quit {
                self.close_confirmed = true;
                ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            }
        }
    }

    fn left_panel(&mut self, ui: &mut egui::Ui) {
        ui.heading("Model");
        match (&self.model, &self.loading) {
            (_, Some(spec)) => {
                ui.label(format!("loading {spec} …"));
            }
            (Some(spec), None) => {
                ui.label(egui::RichText::new(spec).strong());
                ui.small(&self.model_summary);
            }
            (None, None) => {
                ui.label("no model loaded");
            }
        }
        ui.horizontal_wrapped(|ui| {
            for m in KNOWN_MODELS {
                let fetched = fetched_path(m).exists();
                let label = if fetched {
                    m.name.to_string()
                } else {
                    format!("{} (fetch)", m.name)
                };
                if ui.button(label).on_hover_text(m.description).clicked() {
                    self.open_model_spec(m.name.to_string());
                }
            }
        });
        ui.horizontal(|ui| {
            if ui.button("Open folder…").clicked() {
                self.ask_open_model_folder();
            }
            if ui.button("Open GGUF/ONNX…").clicked() {
                self.ask_open_model_file();
            }
        });
        let recent: Vec<String> = self
            .settings
            .recent_models
            .iter()
            .filter(|m| Some(*m) != self.model.as_ref())
            .cloned()
            .collect();
        if !recent.is_empty() {
            ui.collapsing("recent models", |ui| {
                for m in recent {
                    if ui.small_button(&m).clicked() {
                        self.open_model_spec(m);
                    }
                }
            });
        }
        if let Some(status) = &self.busy {
            let bar = egui::ProgressBar::new(status.fraction.unwrap_or(0.0))
                .text(status.message.clone())
                .animate(status.fraction.is_none());
            ui.add(bar);
        }
        ui.separator();
        ui.heading("Input");
        if self.takes_images {
            ui.horizontal(|ui| {
                if ui.button("Open image…").clicked() {
                    self.ask_open_image();
                }
                match &self.image {
                    Some(path) => ui.label(
                        path.file_name()
                            .unwrap_or_default()
                            .to_string_lossy()
                            .to_string(),
                    ),
                    None => ui.small("or drop a picture on the window"),
                };
            });
        } else {
            let edit = ui.add(
                egui::TextEdit::multiline(&mut self.prompt)
                    .desired_rows(5)
                    .desired_width(f32::INFINITY)
                    .hint_text("Type a prompt; the model runs as you type."),
            );
            if edit.changed() {
                self.last_edit = Some(Instant::now());
            }
        }
        if let Some(doc) = self.doc.clone() {
            if doc.inputs() > 1 {
                egui::ComboBox::from_label("input")
                    .selected_text(format!("input {}", self.view.input))
                    .show_ui(ui, |ui| {
                        for i in 0..doc.inputs() {
                            let input = &doc.session.meta.inputs[i];
                            let text = input
                                .text
                                .clone()
                                .or_else(|| input.image.clone())
                                .unwrap_or_default();
                            let short: String = text.chars().take(40).collect();
                            ui.selectable_value(&mut self.view.input, i, format!("{i}: {short}"));
                        }
                    });
            }
            ui.small(format!("{} tokens", doc.tokens(self.view.input).len()));
            head::next_tokens(ui, &doc, self.view.input);
        }
        if let Some(error) = &self.error {
            ui.separator();
            ui.colored_label(ui.visuals().error_fg_color, error);
            if self.doc.is_some() {
                ui.small("The last good result stays on screen.");
            }
        }
        ui.separator();
        ui.heading("Sessions");
        ui.horizontal(|ui| {
            if ui.button("Open…").clicked() {
                self.ask_open_session();
            }
            if ui
                .add_enabled(self.doc.is_some(), egui::Button::new("Save"))
                .clicked()
            {
                self.save();
            }
            if ui
                .add_enabled(self.doc.is_some(), egui::Button::new("Save as…"))
                .clicked()
            {
                self.save_as();
            }
        });
        let recent: Vec<PathBuf> = self.settings.recent_sessions.clone();
        if !recent.is_empty() {
            ui.collapsing("recent sessions", |ui| {
                for p in recent {
                    let name = p
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .to_string();
                    if ui
                        .small_button(name)
                        .on_hover_text(p.display().to_string())
                        .clicked()
                    {
                        self.open_session_checked(p);
                    }
                }
            });
        }
    }

    fn menu(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui.button("Open session…  (Ctrl+O)").clicked() {
                    self.ask_open_session();
                }
                if ui.button("Save session  (Ctrl+S)").clicked() {
                    self.save();
                }
                if ui.button("Save session as…  (Ctrl+Shift+S)").clicked() {
                    self.save_as();
                }
                ui.separator();
                if ui.button("Open model folder…  (Ctrl+M)").clicked() {
                    self.ask_open_model_folder();
                }
                if ui.button("Open GGUF or ONNX model…").clicked() {
                    self.ask_open_model_file();
                }
                ui.separator();
                if ui.button("Export view as PNG (2x)…  (Ctrl+E)").clicked() {
                    self.export_view_dialog(&ctx);
                }
                if ui.button("Export window as PNG…  (Ctrl+Shift+E)").clicked() {
                    self.export_window_dialog(&ctx);
                }
                if ui.button("Export every head of this layer…").clicked() {
                    self.export_heads_dialog(&ctx, false);
                }
                if ui.button("Export every head of the model…").clicked() {
                    self.export_heads_dialog(&ctx, true);
                }
                ui.separator();
                if ui.button("Quit").clicked() {
                    ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                }
            });
            ui.menu_button("View", |ui| {
                ui.selectable_value(&mut self.view.tab, Tab::Overview, "Head overview  (1)");
                ui.selectable_value(&mut self.view.tab, Tab::Head, "Head view  (2)");
                ui.selectable_value(&mut self.view.tab, Tab::Image, "Image view  (3)");
                ui.selectable_value(&mut self.view.tab, Tab::Qk, "Queries and keys  (4)");
            });
            ui.menu_button("Help", |ui| {
                if ui.button("Keyboard shortcuts  (F1)").clicked() {
                    self.show_help = true;
                }
            });
        });
    }

    fn central(&mut self, ui: &mut egui::Ui) {
        let Some(doc) = self.doc.clone() else {
            ui.centered_and_justified(|ui| {
                ui.label(match (&self.loading, &self.error) {
                    (_, Some(e)) => format!("Nothing to show yet.\n{e}"),
                    (Some(spec), _) => format!("Loading {spec} …"),
                    _ => "Drop a session or a model here, or type a prompt.".to_string(),
                });
            });
            return;
        };
        let picture = image_view::is_image(&doc, self.view.input);
        ui.horizontal(|ui| {
            ui.selectable_value(&mut self.view.tab, Tab::Overview, "Head overview");
            ui.selectable_value(&mut self.view.tab, Tab::Head, "Head view");
            if picture {
                ui.selectable_value(&mut self.view.tab, Tab::Image, "Image view");
            }
            ui.selectable_value(&mut self.view.tab, Tab::Qk, "Queries and keys");
        });
        ui.separator();
        match self.view.tab {
            Tab::Overview => {
                overview::controls(ui, &mut self.view);
                if let Some(OverviewAction::OpenHead { layer, head }) =
                    overview::show(ui, &doc, &mut self.view)
                {
                    self.view.layer = layer;
                    self.view.head = head;
                    self.view.tab = Tab::Head;
                    self.view.window = None;
                    self.view.line_heads.clear();
                }
            }
            Tab::Qk => {
                self.corpus_bar(ui, &doc);
                let mut actions: Vec<QkAction> =
                    qk::controls(ui, &doc, &mut self.view).into_iter().collect();
                ui.label(egui::RichText::new(qk::title(&doc, &self.view)).strong());
                actions.extend(qk::show(ui, &doc, &mut self.view));
                for action in actions {
                    self.project(&doc, action);
                }
            }
            Tab::Image => {
                image_view::controls(ui, &doc, &mut self.view);
                ui.label(egui::RichText::new(image_view::title(&doc, &self.view)).strong());
                egui::ScrollArea::vertical().show(ui, |ui| {
                    image_view::show(ui, &doc, &mut self.view);
                });
            }
            Tab::Head => {
                head::controls(ui, &doc, &mut self.view);
                ui.label(egui::RichText::new(head::title(&self.view)).strong());
                if self.view.show_lines {
                    lines::controls(ui, &doc, &mut self.view);
                    egui::ScrollArea::vertical().show(ui, |ui| {
                        ui.horizontal_top(|ui| {
                            ui.vertical(|ui| {
                                ui.set_width(ui.available_width() * 0.55);
                                ui.set_height(ui.available_height().max(300.0));
                                head::show(ui, &doc, &mut self.view);
                            });
                            ui.vertical(|ui| lines::show(ui, &doc, &self.view));
                        });
                    });
                } else {
                    head::show(ui, &doc, &mut self.view);
                }
            }
        }
    }

    /// Whether the query-key view, if it is showing, has every head's layout to draw.
    fn layouts_ready(&self) -> bool {
        let Some(doc) = &self.doc else { return true };
        if self.view.tab != Tab::Qk || !qk::available(doc) {
            return true;
        }
        let dims = self.view.qk.dims();
        let all = doc.layers() * doc.heads();
        doc.projections.count(Method::Pca, dims) == all
            && (!self.view.qk.single
                || doc
                    .projections
                    .get(self.view.qk.method, self.view.layer, self.view.head, dims)
                    .is_some())
    }

    /// Sends the projector what a query-key view asked for.
    fn project(&mut self, doc: &Arc<Document>, action: QkAction) {
        match action {
            QkAction::NeedPca { dims } => self.projector.ask(ProjectJob::Pca {
                doc: doc.clone(),
                dims,
            }),
            QkAction::NeedNorms => self.projector.ask(ProjectJob::Norms { doc: doc.clone() }),
            QkAction::NeedRefine {
                method,
                layer,
                head,
                dims,
                seed,
            } => self.projector.ask(ProjectJob::Refine {
                doc: doc.clone(),
                method,
                layer,
                head,
                dims,
                seed,
            }),
            QkAction::RefineAll { method, dims, seed } => {
                for layer in 0..doc.layers() {
                    for head in 0..doc.heads() {
                        if doc.projections.get(method, layer, head, dims).is_none() {
                            self.projector.ask(ProjectJob::Refine {
                                doc: doc.clone(),
                                method,
                                layer,
                                head,
                                dims,
                                seed,
                            });
                        }
                    }
                }
            }
        }
    }

    /// Runs the corpus (its first `corpus_lines` inputs) as a new document.
    fn run_corpus(&mut self) {
        match crate::corpus::read(self.corpus_path.as_deref(), self.view.qk.corpus_lines) {
            Ok(corpus) => {
                if self.takes_images && corpus.images.is_empty() {
                    self.error =
                        Some("An image model: choose a folder of pictures as the corpus.".into());
                    return;
                }
                if !self.takes_images && corpus.texts.is_empty() {
                    self.error = Some(
                        "A text model: choose a text file (one input per line) as the corpus."
                            .into(),
                    );
                    return;
                }
                let id = self.next_run;
                self.next_run += 1;
                self.awaited_run = Some(id);
                self.corpus_running = true;
                self.busy = Some(Status {
                    message: "running the corpus".into(),
                    fraction: Some(0.0),
                });
                self.worker.send(Job::Corpus {
                    id,
                    texts: corpus.texts,
                    images: corpus.images,
                });
            }
            Err(e) => self.error = Some(format!("{e:#}")),
        }
    }

    /// The corpus line above the query-key view: what it runs on, and the projector's progress.
    fn corpus_bar(&mut self, ui: &mut egui::Ui, doc: &Document) {
        ui.horizontal_wrapped(|ui| {
            let name = self.corpus_path.as_ref().map_or(
                crate::corpus::DEFAULT_CORPUS_NAME.to_string(),
                |p| p.file_name().unwrap_or_default().to_string_lossy().to_string(),
            );
            ui.label(format!("corpus: {name}"));
            if ui.button("Choose file…").clicked()
                && let Some(p) = rfd::FileDialog::new().add_filter("text", &["txt"]).pick_file()
            {
                self.corpus_path = Some(p);
            }
            if ui.button("Choose picture folder…").clicked()
                && let Some(p) = rfd::FileDialog::new().pick_folder()
            {
                self.corpus_path = Some(p);
            }
            if self.corpus_path.is_some() && ui.small_button("default").clicked() {
                self.corpus_path = None;
            }
            ui.add(
                egui::DragValue::new(&mut self.view.qk.corpus_lines)
                    .range(1..=100_000)
                    .suffix(" inputs"),
            );
            if self.corpus_running {
                if ui.button("Cancel").clicked() {
                    self.worker.cancel_corpus();
                }
            } else if ui
                .add_enabled(self.loading.is_none() && self.model.is_some(), egui::Button::new("Run corpus"))
                .on_hover_text("Runs the model on every input of the corpus; the result replaces the open document.")
                .clicked()
            {
                self.run_corpus();
            }
            ui.small(format!("now: {} input(s), {} tokens", doc.inputs(), doc.session.corpus_tokens()));
        });
        if let Some(busy) = self.projector.busy() {
            ui.horizontal(|ui| {
                ui.add(
                    egui::ProgressBar::new(busy.fraction)
                        .desired_width(260.0)
                        .text(busy.message),
                );
                if ui.small_button("Cancel").clicked() {
                    self.projector.cancel();
                }
            });
        }
    }

    fn dialogs(&mut self, ctx: &egui::Context) {
        if let Some(pending) = &self.pending {
            let what = match pending {
                Pending::Close => "quitting",
                Pending::OpenSession(_) => "opening another session",
                Pending::RunPrompt => "running the prompt, which replaces them",
            };
            let mut choice = None;
            egui::Window::new("Unsaved changes")
                .collapsible(false)
                .resizable(false)
                .anchor(egui::Align2::CENTER_CENTER, egui::Vec2::ZERO)
                .show(ctx, |ui| {
                    ui.label(format!(
                        "The current results are not saved. Save them before {what}?"
                    ));
                    ui.horizontal(|ui| {
                        if ui.button("Save").clicked() {
                            choice = Some(0);
                        }
                        if ui.button("Discard").clicked() {
                            choice = Some(1);
                        }
                        if ui.button("Cancel").clicked() {
                            choice = Some(2);
                        }
                    });
                });
            if let Some(choice) = choice {
                let pending = self.pending.take();
                if choice == 0 {
                    self.save();
                }
                let proceed = choice == 1 || (choice == 0 && !self.dirty);
                if proceed {
                    match pending {
                        Some(Pending::Close) => {
                            self.close_confirmed = true;
                            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                        }
                        Some(Pending::OpenSession(p)) => {
                            self.dirty = false;
                            let _ = self.open_session(&p);
                        }
                        Some(Pending::RunPrompt) => {
                            self.request_run();
                            self.busy = Some(Status {
                                message: "running".into(),
                                fraction: None,
                            });
                        }
                        None => {}
                    }
                }
            }
        }
        if self.show_help {
            egui::Window::new("Keyboard shortcuts")
                .collapsible(false)
                .open(&mut self.show_help)
                .anchor(egui::Align2::CENTER_CENTER, egui::Vec2::ZERO)
                .show(ctx, |ui| {
                    egui::Grid::new("shortcuts").striped(true).show(ui, |ui| {
                        for (keys, what) in SHORTCUTS {
                            ui.monospace(*keys);
                            ui.label(*what);
                            ui.end_row();
                        }
                    });
                });
        }
    }
}

pub const SHORTCUTS: &[(&str, &str)] = &[
    ("← →", "previous / next head"),
    ("↑ ↓", "previous / next layer"),
    ("1", "head overview"),
    ("3 / 4", "image view / queries and keys"),
    ("2 or Enter", "head view of the selected head"),
    ("Ctrl+O", "open a session"),
    ("Ctrl+S", "save the session"),
    ("Ctrl+Shift+S", "save the session as"),
    ("Ctrl+M", "open a model folder"),
    ("Ctrl+E", "export the view as PNG (2x)"),
    ("Ctrl+Shift+E", "export the window as PNG"),
    ("F1 or ?", "this help"),
    (
        "wheel / drag",
        "zoom / pan the heatmap (double-click resets)",
    ),
];

impl eframe::App for HeadwiseApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        self.handle_reports();
        if let Some(export) = &mut self.export {
            if let Some(result) = export.poll() {
                match result {
                    Ok(message) => self.info = message,
                    Err(e) => self.error = Some(format!("export failed: {e:#}")),
                }
                self.export = None;
            } else {
                ctx.request_repaint_after(Duration::from_millis(100));
            }
        }
        // Debounced re-run: once typing pauses and the text differs from what last ran.
        if let Some(edited) = self.last_edit {
            let waited = edited.elapsed();
            if waited >= DEBOUNCE && self.loading.is_none() {
                self.last_edit = None;
                if self.sent_prompt.as_deref() != Some(self.prompt.as_str()) {
                    if !self.takes_images && self.prompt.trim().is_empty() {
                        self.error = Some("The prompt is empty.".into());
                    } else if self.dirty && self.doc.as_ref().is_some_and(|d| d.inputs() > 1) {
                        // A corpus run is minutes of work: ask before a prompt replaces it.
                        self.sent_prompt = Some(self.prompt.clone());
                        self.pending = Some(Pending::RunPrompt);
                    } else {
                        self.request_run();
                        self.busy = Some(Status {
                            message: "running".into(),
                            fraction: None,
                        });
                    }
                }
            } else {
                ctx.request_repaint_after(
                    DEBOUNCE
                        .saturating_sub(waited)
                        .max(Duration::from_millis(20)),
                );
            }
        }
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        });
        for path in dropped {
            self.open_path(path);
        }
        if ctx.input(|i| i.viewport().close_requested()) && self.dirty && !self.close_confirmed {
            ctx.send_viewport_cmd(egui::ViewportCommand::CancelClose);
            self.pending = Some(Pending::Close);
        }
        self.shortcuts(&ctx);
        self.take_screenshots(&ctx);
        if let Some(error) = self.projector.take_error() {
            self.error = Some(error);
        }
        if let Some(doc) = &self.doc {
            let changes = doc.projections.changes();
            if changes != self.projections_seen {
                self.projections_seen = changes;
                self.dirty = true;
            }
        }

        let title = format!(
            "headwise — {}{}",
            self.session_path
                .as_ref()
                .and_then(|p| p.file_name())
                .map_or("untitled".into(), |n| n.to_string_lossy().to_string()),
            if self.dirty { " *" } else { "" }
        );
        if title != self.title {
            ctx.send_viewport_cmd(egui::ViewportCommand::Title(title.clone()));
            self.title = title;
        }

        egui::Panel::top("menu").show(ui, |ui| self.menu(ui));
        egui::Panel::bottom("status").show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.small(&self.device);
                ui.separator();
                ui.small(&self.info);
                if let Some(export) = &self.export {
                    ui.separator();
                    ui.add(
                        egui::ProgressBar::new(export.fraction())
                            .desired_width(160.0)
                            .text("exporting"),
                    );
                }
            });
        });
        egui::Panel::left("model and input")
            .resizable(true)
            .default_size(280.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| self.left_panel(ui));
            });
        egui::CentralPanel::default().show(ui, |ui| self.central(ui));
        self.dialogs(&ctx);

        // A few frames let the layout settle and the GPU uploads finish before the picture.
        self.frames += 1;
        let due = self
            .screenshot
            .as_ref()
            .is_some_and(|r| !r.requested && self.frames >= 5)
            // Wait for a model that is loading, a run under way or the query-key layouts, but
            // not forever.
            && ((self.busy.is_none() && self.last_edit.is_none() && self.layouts_ready())
                || self.started.elapsed() > Duration::from_secs(120));
        if due {
            if let Some(request) = &mut self.screenshot {
                request.requested = true;
            }
            self.ask_screenshot(&ctx);
        }
        if self.screenshot.is_some() {
            ctx.request_repaint();
        }
    }
}

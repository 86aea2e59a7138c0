//! The window's application object: the open document and view state, and the parts that each
//! do one job (runs, files, exports, screenshots, projections), wired together once a frame.
//! The panels draw them (panels.rs), the keyboard drives them (shortcuts.rs).

use super::export::Exports;
use super::files::Files;
use super::projector::Projector;
use super::runs::Runs;
use super::screenshots::Screenshots;
use super::settings::Settings;
use crate::caches::metrics::MetricsCache;
use crate::document::{DeviceAttention, Document};
use crate::jobs::Repaint;
use crate::render::heatmap::HeatmapResources;
use crate::render::scatter::ScatterResources;
use crate::views::state::{Tab, ViewState};
use crate::views::{VIEWS, view};
use eframe::egui;
use headwise_engine::device::DeviceChoice;
use headwise_engine::session::Session;
use std::path::PathBuf;
use std::sync::Arc;

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

/// What the status bar and the left panel tell: the last success and the last failure (shown
/// until the next success; the last good result stays on screen).
#[derive(Default)]
pub(super) struct Messages {
    pub info: String,
    pub error: Option<String>,
}

pub struct HeadwiseApp {
    pub(super) doc: Option<Arc<Document>>,
    pub(super) view: ViewState,
    pub(super) runs: Runs,
    pub(super) files: Files,
    pub(super) projector: Projector,
    pub(super) exports: Exports,
    pub(super) screenshots: Screenshots,
    pub(super) messages: Messages,
    pub(super) repaint: Repaint,
    pub(super) show_help: bool,
    /// The window title last sent, so it is only sent again when it changes.
    title: String,
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
        let repaint = Repaint::new(&cc.egui_ctx);
        let mut app = Self {
            doc: None,
            view: ViewState::default(),
            runs: Runs::new(options.device, options.image.clone(), &settings),
            files: Files::new(settings),
            projector: Projector::new(options.device),
            exports: Exports::new(render_device),
            screenshots: Screenshots::new(options.screenshot.clone()),
            messages: Messages::default(),
            repaint,
            show_help: false,
            title: String::new(),
        };
        let session = options.session.clone().or_else(|| {
            (options.model.is_none())
                .then(|| app.files.settings.last_session.clone())
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
            .or_else(|| app.files.settings.last_model.clone())
            .unwrap_or_else(|| super::runs::DEFAULT_MODEL.to_string());
        // With a session on screen, the model loads in the background for new prompts but the
        // session's own results are not recomputed.
        app.load_model(&model, run_prompt);
        app
    }

    /// What the window shows, for the soak test: the generation of the document on screen
    /// (None before the first result) and the error line (None since the last success).
    #[doc(hidden)]
    pub fn on_screen(&self) -> (Option<u64>, Option<&str>) {
        (
            self.doc.as_ref().map(|d| d.generation),
            self.messages.error.as_deref(),
        )
    }

    /// The document on screen, for the tests.
    #[doc(hidden)]
    pub fn document(&self) -> Option<&Arc<Document>> {
        self.doc.as_ref()
    }

    /// The status line, for the tests.
    #[doc(hidden)]
    pub fn status_line(&self) -> &str {
        &self.messages.info
    }

    /// The input the views show, for the tests.
    #[doc(hidden)]
    pub fn shown_input(&self) -> usize {
        self.view.input
    }

    /// Whether nothing is under way, for the soak test: no model loading or running, no edit
    /// waiting to run, no question waiting for an answer.
    #[doc(hidden)]
    pub fn settled(&self) -> bool {
        self.runs.busy().is_none() && self.runs.last_edit.is_none() && self.files.pending.is_none()
    }

    /// Puts a new document on screen: a run's result or an opened session, with the view state
    /// it brings (or the current one), kept to what the document can show.
    pub(super) fn set_document(
        &mut self,
        session: Session,
        device_attention: DeviceAttention,
        view_state: Option<ViewState>,
    ) {
        let mut doc = Document::new(session).with_device_attention(device_attention);
        if let Some(device) = self.runs.analysis_device() {
            doc = doc.with_analysis_device(device.clone());
        }
        let restored = view_state.is_some();
        let mut state = view_state.unwrap_or_else(|| self.view.clone());
        let input = state.input.min(doc.inputs().saturating_sub(1));
        // A first picture opens on the image view; a view that cannot show the input gives
        // way to the overview.
        if !restored
            && let Some(opening) = VIEWS.iter().find(|v| {
                v.opens_on(&doc, input)
                    && !self
                        .doc
                        .as_ref()
                        .is_some_and(|old| v.opens_on(old, self.view.input))
            })
        {
            state.tab = opening.tab();
        }
        if !view(state.tab).available(&doc, input) {
            state.tab = Tab::Overview;
        }
        state.clamp_to(doc.inputs(), doc.layers(), doc.heads());
        if state
            .qk
            .selected
            .is_some_and(|q| q >= doc.session.corpus_tokens())
        {
            state.qk.selected = None;
        }
        self.files.projections_seen = doc.projections.changes();
        if state.input != self.view.input || state.layer != self.view.layer {
            state.window = None;
        }
        self.view = state;
        let doc = Arc::new(doc);
        MetricsCache::start(&doc, &self.repaint);
        // Projections asked for the document that goes are not wanted any more.
        self.projector.clear();
        self.doc = Some(doc);
    }

    fn update_title(&mut self, ctx: &egui::Context) {
        let title = format!(
            "headwise — {}{}",
            self.files
                .session_path
                .as_ref()
                .and_then(|p| p.file_name())
                .map_or("untitled".into(), |n| n.to_string_lossy().to_string()),
            if self.files.dirty() { " *" } else { "" }
        );
        if title != self.title {
            ctx.send_viewport_cmd(egui::ViewportCommand::Title(title.clone()));
            self.title = title;
        }
    }
}

impl eframe::App for HeadwiseApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        self.poll_runs(&ctx);
        self.poll_exports(&ctx);
        self.poll_projections();
        self.handle_dropped_files(&ctx);
        self.reload_if_rewritten(&ctx);
        self.confirm_close(&ctx);
        self.shortcuts(&ctx);
        self.take_screenshots(&ctx);
        self.update_title(&ctx);
        self.panels(ui);
        self.dialogs(&ctx);
        self.screenshot_when_ready(&ctx);
    }
}

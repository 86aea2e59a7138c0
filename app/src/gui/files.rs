//! Files and sessions: opening and saving session files, what a dropped or chosen path opens,
//! what the app remembers between starts, and asking before unsaved results are discarded.

use super::app::HeadwiseApp;
use super::file_watch::{CHECK_EVERY, FileWatch};
use super::settings::Settings;
use crate::document::Document;
use crate::views::state::ViewState;
use eframe::egui;
use headwise_engine::session::Session;
use std::path::{Path, PathBuf};

/// Something that would discard unsaved work, waiting for the user to confirm.
pub(super) enum Pending {
    Close,
    OpenSession(PathBuf),
    /// An edited prompt would replace an unsaved corpus run.
    RunPrompt,
}

pub(super) struct Files {
    pub settings: Settings,
    pub session_path: Option<PathBuf>,
    /// A model run on screen is not saved.
    pub run_unsaved: bool,
    /// Query-key layouts computed since the session was opened or saved are not saved (a
    /// newer version of the file makes them stale, so they do not hold a reload back).
    pub layouts_unsaved: bool,
    pub pending: Option<Pending>,
    close_confirmed: bool,
    /// The projection store's change count when the session was last saved or opened.
    pub projections_seen: u64,
    /// The session file on screen, reloaded when something else rewrites it.
    watch: Option<FileWatch>,
}

impl Files {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            session_path: None,
            run_unsaved: false,
            layouts_unsaved: false,
            pending: None,
            close_confirmed: false,
            projections_seen: 0,
            watch: None,
        }
    }

    /// Whether anything on screen is unsaved.
    pub fn dirty(&self) -> bool {
        self.run_unsaved || self.layouts_unsaved
    }

    /// Everything on screen is in the file (or was discarded).
    pub fn saved(&mut self) {
        self.run_unsaved = false;
        self.layouts_unsaved = false;
    }
}

/// The session the window saves: the document's, with the view state on screen and every
/// query-key layout computed since it opened.
pub fn session_to_save(doc: &Document, view: &ViewState) -> Session {
    let mut session = doc.session.clone();
    session.meta.view = view.to_json();
    doc.projections.write_into(&mut session);
    session
}

impl HeadwiseApp {
    /// Opens a session file: inputs, attention and view state, without running the model.
    pub fn open_session(&mut self, path: &Path) -> anyhow::Result<()> {
        let session = match Session::open(path) {
            Ok(s) => s,
            Err(e) => {
                self.messages.error = Some(format!("{e}"));
                return Err(e.into());
            }
        };
        // A session saved without a view state opens as a fresh run would.
        let view = (!session.meta.view.is_null()).then(|| ViewState::from_json(&session.meta.view));
        if let Some(text) = session.meta.inputs.first().and_then(|i| i.text.clone()) {
            self.runs.prompt = text;
        }
        self.runs.prompt_ran();
        self.set_document(session, Vec::new(), view);
        self.files.session_path = Some(path.to_path_buf());
        self.files.watch = Some(FileWatch::new(path));
        self.files.saved();
        self.messages.error = None;
        self.messages.info = format!("opened {}", path.display());
        self.files.settings.remember_session(path);
        let _ = self.files.settings.save();
        Ok(())
    }

    fn save_session(&mut self, path: &Path) {
        let Some(doc) = &self.doc else {
            return;
        };
        let session = session_to_save(doc, &self.view);
        let changes = doc.projections.changes();
        match session.save(path, session.dtype) {
            Ok(()) => {
                self.files.session_path = Some(path.to_path_buf());
                self.files.watch = Some(FileWatch::new(path));
                self.files.saved();
                self.files.projections_seen = changes;
                self.messages.info = format!("saved {}", path.display());
                self.files.settings.remember_session(path);
                let _ = self.files.settings.save();
            }
            Err(e) => {
                self.messages.error = Some(format!("saving failed, nothing was overwritten: {e}"))
            }
        }
    }

    /// Reloads the open session when another program (a notebook's `headwise.show` loop)
    /// has rewritten it, keeping the view on screen; with an unsaved run on screen it only says
    /// so.
    pub(super) fn reload_if_rewritten(&mut self, ctx: &egui::Context) {
        let Some(watch) = self.files.watch.as_mut() else {
            return;
        };
        ctx.request_repaint_after(CHECK_EVERY);
        if !watch.changed(std::time::Instant::now()) {
            return;
        }
        let path = watch.path().to_path_buf();
        if self.files.run_unsaved {
            self.messages.info = format!(
                "{} changed on disk; the unsaved run here stays (open the file again to see it)",
                path.display()
            );
            return;
        }
        match Session::open(&path) {
            Ok(session) => {
                self.set_document(session, Vec::new(), Some(self.view.clone()));
                // Layouts computed for the version that went go with it.
                self.files.saved();
                self.messages.error = None;
                self.messages.info = format!("reloaded {} (changed on disk)", path.display());
            }
            // The last good result stays on screen.
            Err(e) => self.messages.error = Some(format!("reloading: {e}")),
        }
    }

    pub(super) fn save(&mut self) {
        match self.files.session_path.clone() {
            Some(p) => self.save_session(&p),
            None => self.save_as(),
        }
    }

    pub(super) fn save_as(&mut self) {
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

    pub(super) fn ask_open_session(&mut self) {
        if let Some(path) = rfd::FileDialog::new()
            .add_filter("headwise session", &["safetensors"])
            .pick_file()
        {
            self.open_session_checked(path);
        }
    }

    /// Opens a session, asking first if that would discard unsaved results.
    pub(super) fn open_session_checked(&mut self, path: PathBuf) {
        if self.files.dirty() {
            self.files.pending = Some(Pending::OpenSession(path));
        } else {
            let _ = self.open_session(&path);
        }
    }

    pub(super) fn ask_open_model_folder(&mut self) {
        if let Some(dir) = rfd::FileDialog::new().pick_folder() {
            self.open_model_spec(dir.display().to_string());
        }
    }

    pub(super) fn ask_open_model_file(&mut self) {
        if let Some(file) = rfd::FileDialog::new()
            .add_filter("model", &["gguf", "onnx"])
            .pick_file()
        {
            self.open_model_spec(file.display().to_string());
        }
    }

    /// A dropped or chosen path: a session, a picture, a text file (the prompt), or a model
    /// folder or file.
    pub(super) fn open_path(&mut self, path: PathBuf) {
        let is_session = path.extension().is_some_and(|e| e == "safetensors")
            && path.file_name().is_some_and(|n| n != "model.safetensors");
        if headwise_engine::pipeline::is_picture(&path) {
            self.run_image(path);
        } else if super::runs::is_text_file(&path) {
            self.open_prompt_file(&path);
        } else if is_session {
            self.open_session_checked(path);
        } else {
            self.open_model_spec(path.display().to_string());
        }
    }

    pub(super) fn handle_dropped_files(&mut self, ctx: &egui::Context) {
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
    }

    /// Closing the window with unsaved results asks first.
    pub(super) fn confirm_close(&mut self, ctx: &egui::Context) {
        if ctx.input(|i| i.viewport().close_requested())
            && self.files.dirty()
            && !self.files.close_confirmed
        {
            ctx.send_viewport_cmd(egui::ViewportCommand::CancelClose);
            self.files.pending = Some(Pending::Close);
        }
    }

    /// Quits without asking (after the user confirmed, or once the start-up screenshot is
    /// saved).
    pub(super) fn quit(&mut self, ctx: &egui::Context) {
        self.files.close_confirmed = true;
        ctx.send_viewport_cmd(egui::ViewportCommand::Close);
    }

    /// The dialog that asks whether to save before unsaved results are discarded.
    pub(super) fn unsaved_dialog(&mut self, ctx: &egui::Context) {
        let Some(pending) = &self.files.pending else {
            return;
        };
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
        let Some(choice) = choice else {
            return;
        };
        let pending = self.files.pending.take();
        if choice == 0 {
            self.save();
        }
        let proceed = choice == 1 || (choice == 0 && !self.files.dirty());
        if !proceed {
            return;
        }
        match pending {
            Some(Pending::Close) => self.quit(ctx),
            Some(Pending::OpenSession(p)) => {
                self.files.saved();
                let _ = self.open_session(&p);
            }
            Some(Pending::RunPrompt) => self.request_run(),
            None => {}
        }
    }
}

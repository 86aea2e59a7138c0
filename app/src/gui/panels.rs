//! The window's panels: the menu bar, the status bar, the model and input panel on the left,
//! the views in tabs in the middle (each drawn by its entry in the view registry), the corpus
//! bar over views of a corpus, and the help window.

use super::app::HeadwiseApp;
use super::shortcuts::help_rows;
use crate::caches::weighted::Weighted;
use crate::document::Document;
use crate::views::{VIEWS, ViewAction, head, view};
use eframe::egui;
use headwise_engine::locate::{KNOWN_MODELS, fetched_path};
use headwise_engine::pipeline::Generation;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Prompts longer than this (opened or dropped documents) are shown, not edited, in the window.
const EDITABLE_PROMPT_BYTES: usize = 20_000;

impl HeadwiseApp {
    pub(super) fn panels(&mut self, ui: &mut egui::Ui) {
        egui::Panel::top("menu").show(ui, |ui| self.menu(ui));
        egui::Panel::bottom("status").show(ui, |ui| self.status_bar(ui));
        egui::Panel::left("model and input")
            .resizable(true)
            .default_size(280.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| {
                    self.model_panel(ui);
                    ui.separator();
                    self.input_panel(ui);
                    ui.separator();
                    self.sessions_panel(ui);
                });
            });
        egui::CentralPanel::default().show(ui, |ui| self.central(ui));
    }

    pub(super) fn dialogs(&mut self, ctx: &egui::Context) {
        self.unsaved_dialog(ctx);
        if self.show_help {
            egui::Window::new("Keyboard shortcuts")
                .collapsible(false)
                .open(&mut self.show_help)
                .anchor(egui::Align2::CENTER_CENTER, egui::Vec2::ZERO)
                .show(ctx, |ui| {
                    egui::Grid::new("shortcuts").striped(true).show(ui, |ui| {
                        for (keys, what) in help_rows() {
                            ui.monospace(keys);
                            ui.label(what);
                            ui.end_row();
                        }
                    });
                });
        }
    }

    fn status_bar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.small(self.runs.device_label());
            ui.separator();
            ui.small(&self.messages.info);
            if let Some(export) = &self.exports.job {
                ui.separator();
                ui.add(
                    egui::ProgressBar::new(export.fraction())
                        .desired_width(160.0)
                        .text("exporting"),
                );
            }
        });
    }

    fn model_panel(&mut self, ui: &mut egui::Ui) {
        ui.heading("Model");
        match (&self.runs.model, self.runs.loading()) {
            (_, Some(spec)) => {
                ui.label(format!("loading {spec} …"));
            }
            (Some(loaded), None) => {
                ui.label(egui::RichText::new(&loaded.spec).strong());
                ui.small(self.runs.summary());
            }
            (None, None) => {
                ui.label("no model loaded");
            }
        }
        ui.horizontal_wrapped(|ui| {
            for m in KNOWN_MODELS {
                let label = if fetched_path(m).exists() {
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
        let current = self.runs.model.as_ref().map(|m| m.spec.clone());
        let recent: Vec<String> = self
            .files
            .settings
            .recent_models
            .iter()
            .filter(|m| Some(*m) != current.as_ref())
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
        if let Some(status) = self.runs.busy() {
            let bar = egui::ProgressBar::new(status.fraction.unwrap_or(0.0))
                .text(status.message)
                .animate(status.fraction.is_none());
            ui.add(bar);
            if self.runs.running() && ui.button("Cancel run").clicked() {
                self.runs.cancel_run();
                self.messages.info = "run cancelled; the document on screen stays".into();
            }
        }
    }

    fn input_panel(&mut self, ui: &mut egui::Ui) {
        ui.heading("Input");
        if self.runs.takes_images() {
            ui.horizontal(|ui| {
                if ui.button("Open image…").clicked() {
                    self.ask_open_image();
                }
                match &self.runs.image {
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
            ui.horizontal(|ui| {
                if ui.button("Open text…").clicked() {
                    self.ask_open_prompt_file();
                }
                ui.small("or drop a .txt file: a long document as the prompt");
            });
            if self.runs.prompt.len() > EDITABLE_PROMPT_BYTES {
                // A long document is not laid out in a text field every frame: that alone
                // would slow the window.
                let start: String = self.runs.prompt.chars().take(300).collect();
                ui.label(format!(
                    "A document of {} characters: {start}…",
                    self.runs.prompt.chars().count()
                ));
                if ui.button("Clear").clicked() {
                    self.runs.prompt.clear();
                }
            } else {
                let edit = ui.add(
                    egui::TextEdit::multiline(&mut self.runs.prompt)
                        .desired_rows(5)
                        .desired_width(f32::INFINITY)
                        .hint_text("Type a prompt; the model runs as you type."),
                );
                if edit.changed() {
                    self.runs.last_edit = Some(Instant::now());
                }
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
                            let mut short: String = text.chars().take(40).collect();
                            if !input.edits.is_empty() {
                                short = format!("edited ({}): {short}", input.edits.join(", "));
                            }
                            if let Some(model) = &input.model {
                                short = format!("{model}: {short}");
                            }
                            ui.selectable_value(&mut self.view.input, i, format!("{i}: {short}"));
                        }
                    });
            }
            ui.small(format!("{} tokens", doc.tokens(self.view.input).len()));
            head::next_tokens(ui, &doc, self.view.input);
        }
        self.edits_panel(ui);
        self.compare_panel(ui);
        self.generation_panel(ui);
        self.gradients_panel(ui);
        if let Some(error) = &self.messages.error {
            ui.separator();
            ui.colored_label(ui.visuals().error_fg_color, error);
            if self.doc.is_some() {
                ui.small("The last good result stays on screen.");
            }
        }
    }

    /// The edits the prompt runs with: each can be switched off or removed (the prompt runs
    /// again); right-click a head in the overview to add one, or type one.
    fn edits_panel(&mut self, ui: &mut egui::Ui) {
        if self
            .runs
            .model
            .as_ref()
            .is_some_and(|m| m.model.takes_images())
        {
            return;
        }
        let mut changed = false;
        ui.collapsing("Edits", |ui| {
            let mut remove = None;
            for (i, (spec, on)) in self.runs.edits.iter_mut().enumerate() {
                ui.horizontal(|ui| {
                    changed |= ui.checkbox(on, spec.as_str()).changed();
                    if ui.small_button("×").on_hover_text("remove").clicked() {
                        remove = Some(i);
                    }
                });
            }
            if let Some(i) = remove {
                self.runs.edits.remove(i);
                changed = true;
            }
            let id = ui.make_persistent_id("new edit");
            let mut typed: String = ui.data_mut(|d| d.get_temp(id).unwrap_or_default());
            let field = ui.add(
                egui::TextEdit::singleline(&mut typed)
                    .hint_text("ablate:L.H, ablate-mean:L.H, scale:L.H:K=F")
                    .desired_width(200.0),
            );
            if field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) {
                match typed.trim().parse::<headwise_engine::edits::Edit>() {
                    Ok(edit) => {
                        self.runs.edits.push((edit.to_string(), true));
                        typed.clear();
                        changed = true;
                    }
                    Err(e) => self.messages.error = Some(e),
                }
            }
            ui.data_mut(|d| d.insert_temp(id, typed));
            if self.runs.edits.is_empty() {
                ui.small("right-click a head in the overview to knock it out or damp a sink");
            }
        });
        if changed && self.runs.model.is_some() {
            self.request_run();
        }
    }

    /// A second prompt run beside the first (the comparison view shows them side by side).
    fn compare_panel(&mut self, ui: &mut egui::Ui) {
        if self
            .runs
            .model
            .as_ref()
            .is_none_or(|m| m.model.takes_images())
        {
            return;
        }
        let mut changed = false;
        ui.collapsing("Compare with", |ui| {
            let mut on = self.runs.compare_prompt.is_some();
            if ui
                .checkbox(&mut on, "a second prompt, side by side")
                .changed()
            {
                self.runs.compare_prompt = on.then(|| self.runs.prompt.clone());
                changed = true;
            }
            if let Some(second) = self.runs.compare_prompt.as_mut() {
                let field = ui.add(
                    egui::TextEdit::multiline(second)
                        .desired_rows(2)
                        .desired_width(f32::INFINITY),
                );
                if field.lost_focus() {
                    changed = true;
                }
                ui.small("runs when the field loses focus; the Compare tab shows both");
            }
        });
        if changed && self.runs.model.is_some() {
            self.request_run();
        }
    }

    /// Decoders: continue the prompt by some tokens (greedy, or sampled with a temperature and a
    /// seed) before each run; the trace covers prompt and continuation, generated tokens green.
    fn generation_panel(&mut self, ui: &mut egui::Ui) {
        if !self
            .runs
            .model
            .as_ref()
            .is_some_and(|m| m.model.is_decoder())
        {
            return;
        }
        let mut changed = false;
        ui.collapsing("Continue the text", |ui| {
            let mut on = self.runs.generate.is_some();
            if ui.checkbox(&mut on, "generate before each run").changed() {
                self.runs.generate = on.then(|| Generation {
                    new_tokens: 20,
                    sampling: headwise_engine::model::generation::Sampling::default(),
                });
                changed = true;
            }
            if let Some(generation) = self.runs.generate.as_mut() {
                // A value takes effect when the drag or the typing ends, not on every step.
                let done = |r: egui::Response| r.drag_stopped() || r.lost_focus();
                ui.horizontal(|ui| {
                    changed |= done(
                        ui.add(
                            egui::DragValue::new(&mut generation.new_tokens)
                                .range(1..=512)
                                .suffix(" tokens"),
                        ),
                    );
                    changed |= done(
                        ui.add(
                            egui::DragValue::new(&mut generation.sampling.temperature)
                                .range(0.0..=2.0)
                                .speed(0.05)
                                .prefix("temperature "),
                        )
                        .on_hover_text("0: the most likely token each time (greedy)"),
                    );
                    if generation.sampling.temperature > 0.0 {
                        changed |= done(ui.add(
                            egui::DragValue::new(&mut generation.sampling.seed).prefix("seed "),
                        ));
                    }
                });
                ui.small("stops at the model's end-of-text token; generated tokens are green");
            }
        });
        if changed && self.runs.model.is_some() {
            self.request_run();
        }
    }

    /// Gradients on each run: switched on, every run also gives each head's importance,
    /// ∂target/∂A ⊙ A and the relevance map for a target picked among the most likely next
    /// tokens (or classes) or typed.
    fn gradients_panel(&mut self, ui: &mut egui::Ui) {
        let mut changed = false;
        ui.collapsing("Gradients", |ui| {
            let mut on = self.runs.gradients.is_some();
            if ui
                .checkbox(&mut on, "compute gradients on each run")
                .on_hover_text(
                    "head importance |∂target/∂ξ_h|, ∂target/∂A ⊙ A per head (head view) and \
                     the relevance map (image view, token panel)",
                )
                .changed()
            {
                self.runs.gradients = on.then(String::new);
                changed = true;
            }
            let Some(spec) = self.runs.gradients.as_mut() else {
                return;
            };
            if let Some(doc) = &self.doc {
                let input = self
                    .view
                    .input
                    .min(doc.session.meta.inputs.len().saturating_sub(1));
                if let Some(info) = doc.session.meta.inputs.get(input) {
                    if info.target.is_some() {
                        ui.small(format!(
                            "target: {}",
                            crate::views::image::target_label(doc, input)
                        ));
                    }
                    ui.horizontal_wrapped(|ui| {
                        ui.small("target:");
                        if ui
                            .selectable_label(spec.is_empty(), "most likely")
                            .clicked()
                        {
                            spec.clear();
                            changed = true;
                        }
                        for next in info.next_tokens.iter().take(5) {
                            let id = next.id.to_string();
                            if ui
                                .selectable_label(*spec == id, format!("{:?}", next.token))
                                .clicked()
                            {
                                *spec = id;
                                changed = true;
                            }
                        }
                    });
                }
            }
            let field = ui.add(
                egui::TextEdit::singleline(spec)
                    .hint_text("a token, an id, a class or a position")
                    .desired_width(200.0),
            );
            if field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) {
                changed = true;
            }
        });
        if changed && self.runs.model.is_some() {
            self.request_run();
        }
    }

    fn sessions_panel(&mut self, ui: &mut egui::Ui) {
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
        let recent: Vec<PathBuf> = self.files.settings.recent_sessions.clone();
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
                for v in VIEWS {
                    ui.selectable_value(
                        &mut self.view.tab,
                        v.tab(),
                        Self::view_menu_label(v.tab()),
                    );
                }
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
                ui.label(match (self.runs.loading(), &self.messages.error) {
                    (_, Some(e)) => format!("Nothing to show yet.\n{e}"),
                    (Some(spec), _) => format!("Loading {spec} …"),
                    _ => "Drop a session or a model here, or type a prompt.".to_string(),
                });
            });
            return;
        };
        ui.horizontal(|ui| {
            for v in VIEWS {
                // A view shows its tab where it can show the input; the query-key view shows
                // its tab always, to offer a corpus run.
                if v.available(&doc, self.view.input) || v.over_corpus() {
                    ui.selectable_value(&mut self.view.tab, v.tab(), v.name());
                }
            }
            ui.separator();
            ui.selectable_value(&mut self.view.value_weighted, false, "α")
                .on_hover_text("raw attention weights α_ij");
            ui.selectable_value(&mut self.view.value_weighted, true, "α·|v|")
                .on_hover_text(
                    "value-weighted: each weight times the norm of the value it moves, \
                     renormalised per row (Kobayashi et al.); a sink whose value is near zero \
                     fades (W)",
                );
        });
        ui.separator();
        let shown = view(self.view.tab);
        if shown.over_corpus() {
            self.corpus_bar(ui, &doc);
        }
        let drawn = if self.view.value_weighted {
            match doc.caches.weighted.get(&doc, &self.repaint) {
                Weighted::Ready(weighted) => {
                    crate::caches::metrics::MetricsCache::start(&weighted, &self.repaint);
                    weighted
                }
                Weighted::Pending(progress) => {
                    ui.add(
                        egui::ProgressBar::new(progress.fraction.unwrap_or(0.0))
                            .text("value-weighting the attention…"),
                    );
                    return;
                }
                Weighted::Failed(e) => {
                    ui.colored_label(ui.visuals().error_fg_color, e);
                    return;
                }
            }
        } else {
            doc.clone()
        };
        let actions = shown.ui(ui, &drawn, &mut self.view);
        for action in actions {
            self.act(&doc, action);
        }
    }

    /// Does what a view asked.
    fn act(&mut self, doc: &Arc<Document>, action: ViewAction) {
        match action {
            ViewAction::Open { tab, layer, head } => {
                self.view.layer = layer;
                self.view.head = head;
                self.view.tab = tab;
                self.view.window = None;
                self.view.line_heads.clear();
            }
            ViewAction::Project(action) => self.project(doc, action),
            ViewAction::Edit(spec) => self.add_edit(spec),
        }
    }

    /// The corpus line above a view of the corpus: what it runs on, and the projector's
    /// progress.
    fn corpus_bar(&mut self, ui: &mut egui::Ui, doc: &Document) {
        ui.horizontal_wrapped(|ui| {
            let name = self.runs.corpus_path.as_ref().map_or(
                crate::corpus::DEFAULT_CORPUS_NAME.to_string(),
                |p| {
                    p.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .to_string()
                },
            );
            ui.label(format!("corpus: {name}"));
            if ui.button("Choose file…").clicked()
                && let Some(p) = rfd::FileDialog::new()
                    .add_filter("text", &["txt"])
                    .pick_file()
            {
                self.runs.corpus_path = Some(p);
            }
            if ui.button("Choose picture folder…").clicked()
                && let Some(p) = rfd::FileDialog::new().pick_folder()
            {
                self.runs.corpus_path = Some(p);
            }
            if self.runs.corpus_path.is_some() && ui.small_button("default").clicked() {
                self.runs.corpus_path = None;
            }
            ui.add(
                egui::DragValue::new(&mut self.view.qk.corpus_lines)
                    .range(1..=100_000)
                    .suffix(" inputs"),
            );
            if self.runs.corpus_running {
                if ui.button("Cancel").clicked() {
                    self.runs.cancel_corpus();
                }
            } else if ui
                .add_enabled(
                    self.runs.loading().is_none() && self.runs.model.is_some(),
                    egui::Button::new("Run corpus"),
                )
                .on_hover_text(
                    "Runs the model on every input of the corpus; the result replaces the open \
                     document.",
                )
                .clicked()
            {
                self.run_corpus();
            }
            ui.small(format!(
                "now: {} input(s), {} tokens",
                doc.inputs(),
                doc.session.corpus_tokens()
            ));
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
}

//! The query-key view (AttentionViz): where each head's queries and keys sit in one joint space
//! over the whole corpus. The matrix view shows every head's scatter in a layer × head grid; the
//! single view shows one head with pan, zoom or an orbit in 3D, colouring, token search, the
//! token under the mouse in its sentence, and a clicked query's lines to its input's keys.
//!
//! Points are drawn by the scatter shader from GPU buffers; this file chooses what to draw and
//! lays out the grid; qk_single.rs draws one head and answers the mouse there, qk_style.rs
//! colours the points.

use super::camera::Camera;
use super::picture::has_pictures;
use super::qk_style::{colour_legend, point_style};
use super::state::Tab;
use super::state::{ColourBy, ViewState};
use super::{RenderOptions, View, ViewAction, ViewInfo, grid};
use crate::document::Document;
use crate::projections::Layout;
use crate::render::scatter::{LayoutKey, PointStyle, ScatterCallback};
use anyhow::Context;
use eframe::egui;
use headwise_engine::analysis::projection::{Method, Work, project_session};
use headwise_engine::device::{DeviceChoice, create_device};
use headwise_engine::session::Session;
use std::sync::Arc;

pub struct QkView;

impl View for QkView {
    fn info(&self) -> &'static ViewInfo {
        &ViewInfo {
            tab: Tab::Qk,
            name: "Queries and keys",
            help: "every head's queries and keys over the corpus, in one joint space",
            command_name: "qk",
            takes_head: true,
        }
    }

    fn available(&self, doc: &Document, _input: usize) -> bool {
        available(doc)
    }

    fn over_corpus(&self) -> bool {
        true
    }

    fn ui(&self, ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState) -> Vec<ViewAction> {
        let mut actions: Vec<QkAction> = controls(ui, doc, state).into_iter().collect();
        ui.label(egui::RichText::new(title(doc, state)).strong());
        actions.extend(show(ui, doc, state));
        actions.into_iter().map(ViewAction::Project).collect()
    }

    fn title(&self, doc: &Document, state: &ViewState) -> String {
        title(doc, state)
    }

    fn body(&self, ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState) {
        show(ui, doc, state);
    }

    fn natural_size(&self, doc: &Document, state: &ViewState) -> egui::Vec2 {
        if state.qk.single {
            egui::vec2(900.0, 900.0)
        } else {
            grid::grid_size(90.0, doc.layers(), doc.heads()) + egui::vec2(40.0, 80.0)
        }
    }

    fn file_name(&self, state: &ViewState) -> String {
        if state.qk.single {
            format!(
                "qk-{}-L{}-H{}.png",
                state.qk.method.name(),
                state.layer,
                state.head
            )
        } else {
            format!("qk-{}.png", state.qk.method.name())
        }
    }

    fn select(
        &self,
        doc: &Document,
        state: &mut ViewState,
        head: Option<(usize, usize)>,
        options: &RenderOptions,
    ) -> anyhow::Result<()> {
        state.tab = Tab::Qk;
        let Some((layer, head)) = head else {
            return Ok(());
        };
        state.layer = layer;
        state.head = head;
        state.qk.single = true;
        state.qk.selected = None;
        state.qk.camera = Default::default();
        let (method, dims) = chosen_layout(&doc.session, options, layer, head);
        state.qk.method = method;
        state.qk.three_d = dims == 3;
        Ok(())
    }

    /// Lays out the head a render draws if the session lacks its layout.
    fn prepare(
        &self,
        session: &mut Session,
        head: Option<(usize, usize)>,
        options: &RenderOptions,
        progress: &(dyn Fn(&str, f32) + Sync),
    ) -> anyhow::Result<()> {
        if !session.has_queries_and_keys() {
            anyhow::bail!("{NO_QUERIES_AND_KEYS}");
        }
        let Some((layer, head)) = head else {
            return Ok(());
        };
        let (method, dims) = chosen_layout(session, options, layer, head);
        if !(2..=3).contains(&dims) {
            anyhow::bail!("--dims {dims}: 2 or 3");
        }
        if session
            .projection(method, layer, head)
            .is_some_and(|(d, _)| d == dims)
        {
            return Ok(());
        }
        let seed = session
            .meta
            .projections
            .get(method.name())
            .map_or(0, |p| p.seed);
        let device = create_device(DeviceChoice::Auto)?;
        let label = format!("{} of head {layer}.{head}", method.label());
        let progress = |f: f32| progress(&label, f);
        project_session(
            session,
            method,
            dims,
            seed,
            &[(layer, head)],
            &device.device,
            &Work::new(&progress, None),
        )
        .with_context(|| format!("laying out head {layer}.{head}"))?;
        Ok(())
    }
}

/// The layout a render draws: the one asked for, else one the session has for the head (the
/// view state's method first), else PCA in 2D.
fn chosen_layout(
    session: &Session,
    options: &RenderOptions,
    layer: usize,
    head: usize,
) -> (Method, usize) {
    let saved = ViewState::from_json(&session.meta.view).qk.method;
    let stored = |m: Method| session.projection(m, layer, head).map(|(dims, _)| dims);
    let method = options.method.unwrap_or_else(|| {
        std::iter::once(saved)
            .chain(Method::ALL)
            .find(|&m| stored(m).is_some())
            .unwrap_or(Method::Pca)
    });
    (method, options.dims.or_else(|| stored(method)).unwrap_or(2))
}

/// What the view needs the app to do.
#[derive(Debug, Clone, PartialEq)]
pub enum QkAction {
    /// PCA of every head in this many dimensions is missing.
    NeedPca { dims: usize },
    /// The single view's head has no layout of its method yet.
    NeedRefine {
        method: Method,
        layer: usize,
        head: usize,
        dims: usize,
        seed: u64,
    },
    /// The joint vectors' norms (for colouring or sizing by norm) are missing.
    NeedNorms,
    /// Lay out every head by the chosen method.
    RefineAll {
        method: Method,
        dims: usize,
        seed: u64,
    },
}

/// The controls above the scatter(s). Returns an action when a button asks for one.
pub fn controls(ui: &mut egui::Ui, doc: &Document, state: &mut ViewState) -> Option<QkAction> {
    let mut action = None;
    ui.horizontal_wrapped(|ui| {
        ui.selectable_value(&mut state.qk.single, false, "every head");
        ui.selectable_value(&mut state.qk.single, true, format!("head {}.{}", state.layer, state.head));
        ui.separator();
        for method in Method::ALL {
            ui.selectable_value(&mut state.qk.method, method, method.label());
        }
        ui.separator();
        ui.selectable_value(&mut state.qk.three_d, false, "2D");
        ui.selectable_value(&mut state.qk.three_d, true, "3D");
        ui.separator();
        egui::ComboBox::from_id_salt("qk colour")
            .selected_text(format!("colour: {}", state.qk.colour.label()))
            .show_ui(ui, |ui| {
                for c in ColourBy::ALL {
                    ui.selectable_value(&mut state.qk.colour, c, c.label());
                }
            });
        ui.checkbox(&mut state.qk.size_by_norm, "size by norm");
        ui.add(
            egui::TextEdit::singleline(&mut state.qk.search)
                .hint_text("find a token")
                .desired_width(110.0),
        );
        if state.qk.method == Method::Umap {
            ui.add(egui::DragValue::new(&mut state.qk.seed).prefix("seed "));
        }
        if state.qk.method != Method::Pca && !state.qk.single {
            let dims = state.qk.dims();
            let done = doc.projections.count(state.qk.method, dims);
            let all = doc.layers() * doc.heads();
            if done < all
                && ui
                    .button(format!("{} of every head ({done}/{all})", state.qk.method.label()))
                    .on_hover_text("Runs in the background, one head after another; PCA shows until each is done.")
                    .clicked()
            {
                action = Some(QkAction::RefineAll {
                    method: state.qk.method,
                    dims,
                    seed: state.qk.seed,
                });
            }
        }
        if state.qk.single && has_pictures(doc) {
            ui.checkbox(&mut state.qk.thumbnails, "patches as thumbnails");
        }
        if state.qk.single {
            ui.add(egui::Slider::new(&mut state.qk.point_size, 1.0..=12.0).text("point size"));
            if ui.button("reset camera").clicked() {
                state.qk.camera = Camera::default();
            }
        }
    });
    action
}

pub fn title(doc: &Document, state: &ViewState) -> String {
    let n = doc.session.corpus_tokens();
    let what = if state.qk.single {
        format!("layer {}, head {}", state.layer, state.head)
    } else {
        "every head".to_string()
    };
    format!(
        "queries and keys, {what}: {} over {n} tokens of {} input(s), {} points per head",
        state.qk.method.label(),
        doc.inputs(),
        2 * n
    )
}

/// Why a session captured without queries and keys has nothing to lay out.
pub const NO_QUERIES_AND_KEYS: &str = "This session holds attention only: it was captured \
     without the queries and keys (the capture did not know the model's attention modules), so \
     there is nothing to lay out here. The head overview, head view and token panel draw its \
     attention.";

/// Draws the view; returns what the app should compute.
pub fn show(ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState) -> Vec<QkAction> {
    let dims = state.qk.dims();
    let mut actions = Vec::new();
    if doc.session.corpus_tokens() < 2 {
        ui.label("The query-key view needs at least two tokens: run a corpus or a longer prompt.");
        return actions;
    }
    if !doc.session.has_queries_and_keys() {
        ui.label(NO_QUERIES_AND_KEYS);
        return actions;
    }
    if doc.projections.count(Method::Pca, dims) < doc.layers() * doc.heads() {
        actions.push(QkAction::NeedPca { dims });
    }
    let by_norm = state.qk.colour == ColourBy::Norm || state.qk.size_by_norm;
    if by_norm && doc.projections.norms(state.layer, state.head).is_none() {
        actions.push(QkAction::NeedNorms);
    }
    colour_legend(ui, doc, state);
    if state.qk.single {
        if state.qk.method != Method::Pca
            && doc
                .projections
                .get(state.qk.method, state.layer, state.head, dims)
                .is_none()
        {
            actions.push(QkAction::NeedRefine {
                method: state.qk.method,
                layer: state.layer,
                head: state.head,
                dims,
                seed: state.qk.seed,
            });
        }
        super::qk_single::show(ui, doc, state);
    } else {
        matrix(ui, doc, state);
    }
    actions
}

pub(super) fn callback(
    doc: &Document,
    layout: &Layout,
    style: PointStyle,
    camera: &Camera,
    three_d: bool,
    rect: egui::Rect,
    point: f32,
) -> ScatterCallback {
    let transform = camera.transform(
        layout.centre,
        layout.radius,
        three_d,
        rect.width(),
        rect.height(),
    );
    ScatterCallback::new(
        LayoutKey {
            generation: doc.generation,
            version: layout.version,
        },
        layout.points.clone(),
        layout.dims,
        style,
        transform,
        rect,
        point,
    )
}

/// The grid's cell size for an area: scatters need more room than heatmap thumbnails.
pub fn cell_size(available: egui::Vec2, layers: usize, heads: usize) -> f32 {
    grid::cell_size(available, layers, heads, 40.0, 220.0)
}

fn matrix(ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState) {
    let (layers, heads) = (doc.layers(), doc.heads());
    let dims = state.qk.dims();
    let cell = cell_size(ui.available_size(), layers, heads);
    let size = grid::grid_size(cell, layers, heads);
    egui::ScrollArea::both()
        .auto_shrink([false, false])
        .show(ui, |ui| {
            let (rect, response) = ui.allocate_exact_size(size, egui::Sense::click());
            let painter = ui.painter_at(rect);
            let clip = ui.clip_rect();
            let text = ui.visuals().text_color();
            let font = egui::FontId::proportional(11.0);
            let background = ui.visuals().extreme_bg_color;
            grid::labels(ui, &painter, rect, cell, layers, grid::head_labels(heads));
            let mut hovered = None;
            let camera = Camera::default();
            for layer in 0..layers {
                for head in 0..heads {
                    let cell_rect = grid::cell_rect(rect, cell, layer, head);
                    if !clip.intersects(cell_rect) {
                        continue;
                    }
                    painter.rect_filled(cell_rect, 0.0, background);
                    match doc.projections.best(state.qk.method, layer, head, dims) {
                        Some((_, layout)) => {
                            let style = point_style(doc, state, layer, head, false);
                            // Few points are drawn larger, so a short prompt's cloud shows.
                            let base = match layout.len() {
                                0..5_000 => 3.0,
                                5_000..50_000 => 1.6,
                                _ => 1.1,
                            };
                            let cb = callback(
                                doc,
                                &layout,
                                style,
                                &camera,
                                state.qk.three_d,
                                cell_rect,
                                (base * cell / 90.0).clamp(1.0, 4.0),
                            );
                            painter.add(cb.into_shape(clip.intersect(cell_rect)));
                        }
                        None => {
                            painter.text(
                                cell_rect.center(),
                                egui::Align2::CENTER_CENTER,
                                "…",
                                font.clone(),
                                text,
                            );
                        }
                    }
                    if (layer, head) == (state.layer, state.head) {
                        grid::mark_selected(ui, &painter, cell_rect);
                    }
                    if response.hover_pos().is_some_and(|p| cell_rect.contains(p)) {
                        hovered = Some((layer, head));
                    }
                }
            }
            if let Some((layer, head)) = hovered {
                let shown = doc
                    .projections
                    .best(state.qk.method, layer, head, dims)
                    .map(|(m, _)| m);
                response.clone().on_hover_ui_at_pointer(|ui| {
                    ui.strong(format!("layer {layer}, head {head}"));
                    match shown {
                        Some(m) if m == state.qk.method => ui.label(m.label()),
                        Some(m) => ui.label(format!(
                            "{} (until {} is done)",
                            m.label(),
                            state.qk.method.label()
                        )),
                        None => ui.label("laying out …"),
                    };
                    ui.small("click to open");
                });
                if response.clicked() {
                    state.layer = layer;
                    state.head = head;
                    state.qk.single = true;
                    state.qk.selected = None;
                }
            }
        });
}

/// Whether the document can show the query-key view.
pub fn available(doc: &Document) -> bool {
    doc.session.corpus_tokens() >= 2
}

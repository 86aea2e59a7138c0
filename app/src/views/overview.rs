//! The head overview (Dodrio's overview, BertViz's model view): every head of every layer in a
//! layer x head grid, as attention thumbnails drawn by the heatmap shader or coloured by a
//! head metric. Hover tells a head's metrics; a click opens it in the head view.

use super::state::{OverviewMode, Tab, ViewState};
use super::{View, ViewAction, ViewInfo, grid, legend};
use crate::document::{Document, thumbnail_key};
use crate::render::heatmap::{HeatmapCallback, Matrix, MatrixSource};
use eframe::egui;
use headwise_engine::analysis::metrics::{HeadMetric, SINK_EPSILON, sink_rate};
use std::sync::Arc;

pub struct OverviewView;

impl View for OverviewView {
    fn info(&self) -> &'static ViewInfo {
        &ViewInfo {
            tab: Tab::Overview,
            name: "Head overview",
            help: "every head of every layer, as thumbnails or coloured by a metric",
            command_name: "overview",
            takes_head: false,
        }
    }

    fn shows_metrics(&self) -> bool {
        true
    }

    fn ui(&self, ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState) -> Vec<ViewAction> {
        controls(ui, doc, state);
        show(ui, doc, state).into_iter().collect()
    }

    fn title(&self, _doc: &Document, state: &ViewState) -> String {
        format!("every head, input {}", state.input)
    }

    fn body(&self, ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState) {
        show(ui, doc, state);
    }

    fn natural_size(&self, doc: &Document, _state: &ViewState) -> egui::Vec2 {
        let cell = if doc.layers() * doc.heads() > 150 {
            40.0
        } else {
            64.0
        };
        grid::grid_size(cell, doc.layers(), doc.heads()) + egui::vec2(40.0, 80.0)
    }

    fn file_name(&self, _state: &ViewState) -> String {
        "overview.png".to_string()
    }
}

/// The controls above the grid.
pub fn controls(ui: &mut egui::Ui, doc: &Document, state: &mut ViewState) {
    ui.horizontal_wrapped(|ui| {
        ui.label("cells:");
        ui.selectable_value(
            &mut state.overview_mode,
            OverviewMode::Thumbnails,
            "attention",
        );
        if base_of(doc, state.input).is_some() {
            ui.selectable_value(&mut state.overview_mode, OverviewMode::Change, "change")
                .on_hover_text(CHANGE_DEFINITION);
        }
        if doc.session.has_gradient_attention(state.input) {
            ui.selectable_value(
                &mut state.overview_mode,
                OverviewMode::Gradient,
                "gradient × attention",
            )
            .on_hover_text(
                "each head's ∂target/∂A ⊙ A, its positive part, scaled to the head's largest",
            );
        }
        for metric in HeadMetric::ALL {
            ui.selectable_value(
                &mut state.overview_mode,
                OverviewMode::Metric(metric),
                short_label(metric),
            )
            .on_hover_text(format!("{}: {}", metric.label(), metric.definition()));
        }
        ui.separator();
        if doc.session.importance(state.input).is_some() {
            ui.checkbox(&mut state.size_by_importance, "size by importance")
                .on_hover_text(
                    "each head's cell is drawn with its area in proportion to the head's \
                     importance |∂target/∂ξ_h| (Dodrio)",
                );
        }
        egui::ComboBox::from_id_salt("sort heads")
            .selected_text(match state.sort_by {
                None => "heads in order".to_string(),
                Some(m) => format!("sorted by {}", short_label(m)),
            })
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut state.sort_by, None, "heads in order");
                for metric in HeadMetric::ALL {
                    ui.selectable_value(&mut state.sort_by, Some(metric), short_label(metric));
                }
            });
    });
}

pub fn short_label(metric: HeadMetric) -> &'static str {
    match metric {
        HeadMetric::Entropy => "entropy",
        HeadMetric::MeanDistance => "distance",
        HeadMetric::PreviousToken => "previous",
        HeadMetric::FirstToken => "first/sink",
        HeadMetric::SelfToken => "self",
        HeadMetric::SpecialTokens => "special",
        HeadMetric::SecondarySink => "2nd sink",
        HeadMetric::Dormancy => "dormancy",
        HeadMetric::Streaming => "streaming",
        HeadMetric::Retrieval => "retrieval",
        HeadMetric::Importance => "importance",
    }
}

/// What the "change" colouring measures.
pub const CHANGE_DEFINITION: &str = "attention change against the unedited run: mean over \
                                     queries of ½ Σ_j |a_ij − b_ij| (0: the same, 1: elsewhere)";

/// The unedited input an edited one was run against, if it is in the session.
pub fn base_of(doc: &Document, input: usize) -> Option<usize> {
    doc.session.meta.inputs.get(input)?.base
}

/// What the command line calls each metric (`headwise render --metric`).
pub const METRIC_NAMES: [(&str, HeadMetric); 11] = [
    ("entropy", HeadMetric::Entropy),
    ("distance", HeadMetric::MeanDistance),
    ("previous", HeadMetric::PreviousToken),
    ("sink", HeadMetric::FirstToken),
    ("self", HeadMetric::SelfToken),
    ("special", HeadMetric::SpecialTokens),
    ("secondary-sink", HeadMetric::SecondarySink),
    ("dormancy", HeadMetric::Dormancy),
    ("streaming", HeadMetric::Streaming),
    ("retrieval", HeadMetric::Retrieval),
    ("importance", HeadMetric::Importance),
];

pub fn metric_named(name: &str) -> Option<HeadMetric> {
    METRIC_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, m)| *m)
}

/// A metric's value for sorting and ranking: NaN (undefined on this input) last.
fn rank_key(value: f32) -> f32 {
    if value.is_nan() {
        f32::NEG_INFINITY
    } else {
        value
    }
}

/// Each layer's heads in display order.
fn head_order(doc: &Document, input: usize, sort_by: Option<HeadMetric>) -> Vec<Vec<usize>> {
    (0..doc.layers())
        .map(|layer| {
            let mut heads: Vec<usize> = (0..doc.heads()).collect();
            if let (Some(metric), Some(m)) = (
                sort_by,
                doc.metrics().and_then(|m| m.get(input)?.get(layer)),
            ) {
                heads.sort_by(|&a, &b| {
                    rank_key(m[b].get(metric)).total_cmp(&rank_key(m[a].get(metric)))
                });
            }
            heads
        })
        .collect()
}

/// The metric's range over every head of the input, for the colour scale.
fn metric_range(doc: &Document, input: usize, metric: HeadMetric) -> (f32, f32) {
    if metric.is_share() {
        return (0.0, 1.0);
    }
    let values = doc
        .metrics()
        .and_then(|m| m.get(input))
        .into_iter()
        .flatten()
        .flatten()
        .map(|m| m.get(metric))
        .filter(|v| !v.is_nan());
    let (lo, hi) = values.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if lo.is_finite() && hi > lo {
        (lo, hi)
    } else {
        (0.0, 1.0)
    }
}

/// The grid's cell size for an area: as large as fits, within reason.
pub fn cell_size(available: egui::Vec2, layers: usize, heads: usize) -> f32 {
    grid::cell_size(available, layers, heads, 14.0, 160.0)
}

/// Draws the grid in the space left in `ui`; a click on a head asks to open it.
pub fn show(ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState) -> Option<ViewAction> {
    let (layers, heads) = (doc.layers(), doc.heads());
    let input = state.input;
    if state.overview_mode == OverviewMode::Gradient && !doc.session.has_gradient_attention(input) {
        state.overview_mode = OverviewMode::Thumbnails;
    }
    let metrics = doc.metrics().and_then(|m| m.get(input));
    if metrics.is_none() {
        // A large session's metrics come from a thread of their own; the grid draws meanwhile.
        ui.small("working out the head metrics…");
        ui.ctx()
            .request_repaint_after(std::time::Duration::from_millis(100));
    }
    let range = match state.overview_mode {
        OverviewMode::Metric(metric) if metrics.is_some() => {
            Some((metric, metric_range(doc, input, metric)))
        }
        _ => None,
    };
    if let Some((metric, (lo, hi))) = range {
        legend::show(
            ui,
            state.style.colormap,
            metric.label(),
            &format!("{lo:.2}"),
            &format!("{hi:.2}"),
        );
        ui.small(metric.definition());
        if metric == HeadMetric::FirstToken
            && let Some(m) = metrics
        {
            ui.small(format!(
                "sink rate: {:.1}% of heads put more than ε = {SINK_EPSILON} on the first token",
                100.0 * sink_rate(m)
            ));
        }
        if metrics.is_some_and(|m| m.iter().flatten().all(|h| h.get(metric).is_nan())) {
            ui.small(match metric {
                HeadMetric::Retrieval => {
                    "no retrieval scores: this input is not a needle probe \
                                           (headwise probe retrieval)"
                }
                HeadMetric::Dormancy => "no value norms in this session: trace it again",
                HeadMetric::Importance => {
                    "no gradients for this input: switch them on under Gradients, or trace \
                     with --gradients"
                }
                _ => "undefined on this input (too short)",
            });
        }
    }
    let change = match state.overview_mode {
        OverviewMode::Change => doc.caches.changes.get(
            doc,
            input,
            &crate::jobs::Repaint::new(ui.ctx()),
            crate::jobs::inline_work(ui.ctx()),
        ),
        _ => None,
    };
    if state.overview_mode == OverviewMode::Change {
        match (&change, base_of(doc, input)) {
            (Some(change), Some(base)) => {
                let hi = change
                    .iter()
                    .flatten()
                    .fold(0.0f32, |m, v| m.max(*v))
                    .max(1e-6);
                legend::show(
                    ui,
                    state.style.colormap,
                    &format!("change against input {base}"),
                    "0",
                    &format!("{hi:.3}"),
                );
                ui.small(CHANGE_DEFINITION);
                let info = &doc.session.meta.inputs[input];
                match &info.model {
                    Some(model) => ui.small(format!("run by {model}")),
                    None => ui.small(format!("edits: {}", info.edits.join(", "))),
                };
                let mut ranked: Vec<(usize, usize, f32)> = change
                    .iter()
                    .enumerate()
                    .flat_map(|(l, hs)| hs.iter().enumerate().map(move |(h, &v)| (l, h, v)))
                    .collect();
                ranked.sort_by(|a, b| b.2.total_cmp(&a.2));
                ui.horizontal_wrapped(|ui| {
                    ui.small("changed most:");
                    for (layer, head, value) in ranked.into_iter().take(10) {
                        if ui
                            .small_button(format!("L{layer}.H{head} ({value:.3})"))
                            .clicked()
                        {
                            state.layer = layer;
                            state.head = head;
                        }
                    }
                });
            }
            _ if doc.caches.changes.pending(input) => {
                ui.small("working out how much each head's attention changed…");
            }
            _ => {
                ui.small("this input is not an edited run with its base in the session");
            }
        }
    }
    if let Some(metric) = state.sort_by {
        ui.collapsing(format!("heads ranked by {}", metric.label()), |ui| {
            ui.horizontal_wrapped(|ui| {
                for (rank, (layer, head, value)) in
                    ranking(doc, input, metric).into_iter().take(12).enumerate()
                {
                    let label = format!("#{} L{layer}.H{head} ({value:.3})", rank + 1);
                    if ui.small_button(label).clicked() {
                        state.layer = layer;
                        state.head = head;
                    }
                }
            });
        });
    }
    let importance = state
        .size_by_importance
        .then(|| doc.session.importance(input))
        .flatten()
        .filter(|v| v.len() == layers * heads);
    let cell = cell_size(ui.available_size(), layers, heads);
    let size = grid::grid_size(cell, layers, heads);
    let mut action = None;
    egui::ScrollArea::both()
        .auto_shrink([false, false])
        .show(ui, |ui| {
            let (rect, response) = ui.allocate_exact_size(size, egui::Sense::click());
            let painter = ui.painter_at(rect);
            let clip = ui.clip_rect();
            let order = head_order(doc, input, state.sort_by);
            let source: Arc<dyn MatrixSource> = doc.clone();
            let sorted = state.sort_by.is_some();
            let column_labels = (0..heads).map(|h| {
                if sorted {
                    format!("#{}", h + 1)
                } else {
                    format!("H{h}")
                }
            });
            grid::labels(ui, &painter, rect, cell, layers, column_labels);
            let mut hovered = None;
            for (layer, row) in order.iter().enumerate() {
                for (column, &head) in row.iter().enumerate() {
                    let whole_cell = grid::cell_rect(rect, cell, layer, column);
                    if !clip.intersects(whole_cell) {
                        continue;
                    }
                    let cell_rect = match &importance {
                        Some(values) => importance_cell(whole_cell, values, layer * heads + head),
                        None => whole_cell,
                    };
                    if let Some(change) = &change {
                        let hi = change
                            .iter()
                            .flatten()
                            .fold(0.0f32, |m, v| m.max(*v))
                            .max(1e-6);
                        let value = change
                            .get(layer)
                            .and_then(|hs| hs.get(head))
                            .copied()
                            .unwrap_or(0.0);
                        painter.rect_filled(
                            cell_rect,
                            0.0,
                            legend::colour(state.style.colormap, value / hi),
                        );
                    } else {
                        match range {
                            None => {
                                let matrix = if state.overview_mode == OverviewMode::Gradient {
                                    Matrix::Gradient {
                                        layer,
                                        head,
                                        signed: false,
                                    }
                                } else {
                                    Matrix::Head { layer, head }
                                };
                                // The window is in the drawn matrix's units: a thumbnail's
                                // pixels, so that it fills its cell at any length.
                                let (key, side) = thumbnail_key(doc, input, matrix);
                                let side = side as f32;
                                let callback = HeatmapCallback::new(
                                    source.clone(),
                                    key,
                                    cell_rect,
                                    [0.0, 0.0, side, side],
                                    false,
                                    state.style,
                                );
                                painter.add(callback.into_shape(clip));
                            }
                            Some((metric, (lo, hi))) => {
                                let value = metrics
                                    .and_then(|m| Some(m.get(layer)?.get(head)?.get(metric)))
                                    .unwrap_or(lo);
                                let colour = if value.is_nan() {
                                    egui::Color32::from_gray(90)
                                } else {
                                    legend::colour(state.style.colormap, (value - lo) / (hi - lo))
                                };
                                painter.rect_filled(cell_rect, 0.0, colour);
                            }
                        }
                    }
                    if (layer, head) == (state.layer, state.head) {
                        grid::mark_selected(ui, &painter, whole_cell);
                    }
                    if response.hover_pos().is_some_and(|p| whole_cell.contains(p)) {
                        hovered = Some((layer, head));
                    }
                }
            }
            if let Some((layer, head)) = hovered {
                let head_metrics = metrics.and_then(|m| m.get(layer)?.get(head));
                response.clone().on_hover_ui_at_pointer(|ui| {
                    ui.strong(format!("layer {layer}, head {head}"));
                    egui::Grid::new("head metrics").show(ui, |ui| {
                        for metric in HeadMetric::ALL {
                            ui.label(metric.label());
                            ui.label(
                                head_metrics
                                    .map_or("…".into(), |m| format!("{:.3}", m.get(metric))),
                            );
                            ui.end_row();
                        }
                    });
                });
                if response.clicked() {
                    action = Some(ViewAction::Open {
                        tab: Tab::Head,
                        layer,
                        head,
                    });
                }
                // Right-click: knock the head out, or damp its attention to the first token.
                if response.secondary_clicked() {
                    state.layer = layer;
                    state.head = head;
                }
            }
            if doc.session.meta.inputs[input].kind == headwise_engine::session::InputKind::Text {
                let (layer, head) = (state.layer, state.head);
                response.context_menu(|ui| {
                    ui.label(format!("layer {layer}, head {head}"));
                    for (label, spec) in [
                        ("ablate this head", format!("ablate:{layer}.{head}")),
                        (
                            "replace it by its mean",
                            format!("ablate-mean:{layer}.{head}"),
                        ),
                        (
                            "its attention to the first token × 0.1",
                            format!("scale:{layer}.{head}:0=0.1"),
                        ),
                        (
                            "every head's attention to the first token × 0.1",
                            "scale:*.*:0=0.1".to_string(),
                        ),
                    ] {
                        if ui.button(label).clicked() {
                            action = Some(ViewAction::Edit(spec));
                            ui.close();
                        }
                    }
                });
            }
        });
    action
}

/// A head's cell shrunk about its centre so that its area is in proportion to the head's
/// importance over the largest (Dodrio's sizing); never below a fifth of the side, so the
/// least important heads stay visible and clickable.
fn importance_cell(cell: egui::Rect, importance: &[f32], at: usize) -> egui::Rect {
    let largest = importance
        .iter()
        .filter(|v| v.is_finite())
        .fold(0.0f32, |m, &v| m.max(v));
    let share = match importance.get(at) {
        Some(&v) if largest > 0.0 && v.is_finite() => (v / largest).sqrt(),
        _ => 0.0,
    };
    egui::Rect::from_center_size(cell.center(), cell.size() * share.clamp(0.2, 1.0))
}

/// The heads ranked by a metric over the whole model, highest first: (layer, head, value).
pub fn ranking(doc: &Document, input: usize, metric: HeadMetric) -> Vec<(usize, usize, f32)> {
    let mut all: Vec<(usize, usize, f32)> = doc
        .metrics()
        .and_then(|m| m.get(input))
        .into_iter()
        .flatten()
        .enumerate()
        .flat_map(|(l, heads)| {
            heads
                .iter()
                .enumerate()
                .map(move |(h, m)| (l, h, m.get(metric)))
        })
        .filter(|(_, _, v)| !v.is_nan())
        .collect();
    all.sort_by(|a, b| b.2.total_cmp(&a.2));
    all
}

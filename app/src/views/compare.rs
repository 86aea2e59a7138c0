//! Two inputs side by side (two prompts that differ in a word, or any two inputs of a
//! session): the same head of each, zoomed and panned together, and every head's difference in a
//! metric between them, coloured with the diverging map.

use super::state::{Selection, Tab, ViewState};
use super::{View, ViewAction, ViewInfo, grid, head, legend, overview};
use crate::document::Document;
use crate::render::colormap::ColorMap;
use eframe::egui;
use headwise_engine::analysis::metrics::HeadMetric;
use std::sync::Arc;

pub struct CompareView;

impl View for CompareView {
    fn info(&self) -> &'static ViewInfo {
        &ViewInfo {
            tab: Tab::Compare,
            name: "Compare",
            help: "two inputs side by side: one head of each with a shared zoom, and each head's metric \
               difference",
            command_name: "compare",
            takes_head: true,
        }
    }

    fn available(&self, doc: &Document, _input: usize) -> bool {
        doc.inputs() >= 2
    }

    fn shows_metrics(&self) -> bool {
        true
    }

    fn ui(&self, ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState) -> Vec<ViewAction> {
        fit_other(doc, state);
        controls(ui, doc, state);
        egui::ScrollArea::vertical()
            .show(ui, |ui| show(ui, doc, state))
            .inner
            .into_iter()
            .collect()
    }

    fn title(&self, _doc: &Document, state: &ViewState) -> String {
        format!(
            "layer {}, head {}: input {} beside input {}",
            state.layer, state.head, state.input, state.compare.other
        )
    }

    fn body(&self, ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState) {
        fit_other(doc, state);
        let _ = show(ui, doc, state);
    }

    fn natural_size(&self, _doc: &Document, _state: &ViewState) -> egui::Vec2 {
        egui::vec2(1200.0, 1100.0)
    }

    fn file_name(&self, state: &ViewState) -> String {
        format!(
            "compare-{}-{}-L{}-H{}.png",
            state.input, state.compare.other, state.layer, state.head
        )
    }

    fn select(
        &self,
        doc: &Document,
        state: &mut ViewState,
        head: Option<(usize, usize)>,
        _options: &super::RenderOptions,
    ) -> anyhow::Result<()> {
        if doc.inputs() < 2 {
            anyhow::bail!("the comparison needs two inputs; the session has one");
        }
        state.tab = Tab::Compare;
        if let Some((layer, head)) = head {
            state.layer = layer;
            state.head = head;
        }
        fit_other(doc, state);
        Ok(())
    }
}

/// The two inputs inside the document, the one beside the one on screen another (a state kept
/// from an earlier document may name inputs this one lacks).
fn fit_other(doc: &Document, state: &mut ViewState) {
    state.input = state.input.min(doc.inputs().saturating_sub(1));
    if state.compare.other >= doc.inputs() || state.compare.other == state.input {
        state.compare.other = usize::from(state.input == 0);
    }
}

fn input_label(doc: &Document, input: usize) -> String {
    let info = &doc.session.meta.inputs[input];
    let text = info.text.as_deref().or(info.image.as_deref()).unwrap_or("");
    let short: String = text.chars().take(40).collect();
    format!("{input}: {short}")
}

fn controls(ui: &mut egui::Ui, doc: &Document, state: &mut ViewState) {
    if doc.inputs() < 2 {
        // `show` says what is missing.
        return;
    }
    ui.horizontal_wrapped(|ui| {
        let (layers, heads) = (doc.layers(), doc.heads());
        for (id, slot) in [("compare left", 0), ("compare right", 1)] {
            let current = if slot == 0 {
                state.input
            } else {
                state.compare.other
            };
            let mut chosen = current;
            egui::ComboBox::from_id_salt(id)
                .selected_text(input_label(doc, current))
                .show_ui(ui, |ui| {
                    for i in 0..doc.inputs() {
                        ui.selectable_value(&mut chosen, i, input_label(doc, i));
                    }
                });
            if slot == 0 {
                state.input = chosen;
            } else {
                state.compare.other = chosen;
            }
        }
        grid::layer_and_head_pickers(ui, &mut state.layer, layers, Some((&mut state.head, heads)));
        egui::ComboBox::from_id_salt("compare metric")
            .selected_text(format!(
                "difference in {}",
                overview::short_label(state.compare.metric)
            ))
            .show_ui(ui, |ui| {
                for metric in HeadMetric::ALL {
                    ui.selectable_value(
                        &mut state.compare.metric,
                        metric,
                        overview::short_label(metric),
                    );
                }
            });
    });
}

/// A zoom window [x, y, w, h] in one input's visible tokens, in another's.
fn rescale(window: [f32; 4], from: usize, to: usize) -> [f32; 4] {
    let k = to as f32 / from.max(1) as f32;
    window.map(|v| v * k)
}

/// Draws both heads and the metric differences; a right-click edit on either head is handed
/// back.
fn show(ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState) -> Option<ViewAction> {
    let inputs = doc.inputs();
    if inputs < 2 {
        ui.label(
            "The comparison needs two inputs: type a second prompt under \"Compare with\", or \
             trace two texts.",
        );
        return None;
    }
    let pair = [state.input, state.compare.other];
    let visible: Vec<usize> = pair
        .iter()
        .map(|&input| {
            let mut side = state.clone();
            side.input = input;
            side.selection = Selection::Head;
            head::visible(doc, &side).len()
        })
        .collect();
    let half = (ui.available_width() / 2.0 - 8.0).max(200.0);
    let mut action = None;
    let side_height = half.min(620.0);
    ui.horizontal_top(|ui| {
        for (k, &input) in pair.iter().enumerate() {
            let mut side = state.clone();
            side.input = input;
            side.selection = Selection::Head;
            side.window = state.window.map(|w| rescale(w, visible[0], visible[k]));
            let given = side.window;
            ui.vertical(|ui| {
                ui.set_width(half);
                ui.set_height(side_height + 24.0);
                ui.label(
                    egui::RichText::new(format!(
                        "{} ({} tokens)",
                        input_label(doc, input),
                        doc.tokens(input).len()
                    ))
                    .strong(),
                );
                if let Some(edit) = head::show(ui, doc, &mut side) {
                    action = Some(edit);
                }
            });
            // Zooming or panning either side moves both, in proportion to their lengths.
            if side.window != given {
                state.window = side.window.map(|w| rescale(w, visible[k], visible[0]));
            }
        }
    });
    ui.add_space(8.0);
    metric_differences(ui, doc, state);
    action
}

/// Every head's metric on the right input minus the left's, diverging colours scaled to the
/// largest difference; a click selects the head.
fn metric_differences(ui: &mut egui::Ui, doc: &Document, state: &mut ViewState) {
    let metric = state.compare.metric;
    let [a, b] = [state.input, state.compare.other];
    let Some(metrics) = doc.metrics() else {
        ui.small("working out the head metrics…");
        ui.ctx()
            .request_repaint_after(std::time::Duration::from_millis(100));
        return;
    };
    let (Some(left), Some(right)) = (metrics.get(a), metrics.get(b)) else {
        return;
    };
    let (layers, heads) = (doc.layers(), doc.heads());
    let difference = |l: usize, h: usize| -> f32 {
        let value = |m: &Vec<Vec<headwise_engine::analysis::metrics::HeadMetrics>>| {
            m.get(l)
                .and_then(|r| r.get(h))
                .map_or(f32::NAN, |x| x.get(metric))
        };
        value(right) - value(left)
    };
    let largest = (0..layers)
        .flat_map(|l| (0..heads).map(move |h| (l, h)))
        .map(|(l, h)| difference(l, h).abs())
        .filter(|v| v.is_finite())
        .fold(0.0f32, f32::max)
        .max(1e-9);
    legend::show(
        ui,
        ColorMap::Diverging,
        &format!("{}: input {b} minus input {a}", metric.label()),
        &format!("−{largest:.3}"),
        &format!("+{largest:.3}"),
    );
    ui.small(metric.definition());
    let mut ranked: Vec<(usize, usize, f32)> = (0..layers)
        .flat_map(|l| (0..heads).map(move |h| (l, h)))
        .map(|(l, h)| (l, h, difference(l, h)))
        .filter(|(_, _, d)| d.is_finite())
        .collect();
    ranked.sort_by(|x, y| y.2.abs().total_cmp(&x.2.abs()));
    ui.horizontal_wrapped(|ui| {
        ui.small("differ most:");
        for &(layer, head, value) in ranked.iter().take(8) {
            if ui
                .small_button(format!("L{layer}.H{head} ({value:+.3})"))
                .clicked()
            {
                state.layer = layer;
                state.head = head;
            }
        }
    });
    let cell = grid::cell_size(ui.available_size(), layers, heads, 8.0, 24.0);
    let size = grid::grid_size(cell, layers, heads);
    let (rect, response) = ui.allocate_exact_size(size, egui::Sense::click());
    let painter = ui.painter_at(rect);
    grid::labels(ui, &painter, rect, cell, layers, grid::head_labels(heads));
    for layer in 0..layers {
        for head in 0..heads {
            let cell_rect = grid::cell_rect(rect, cell, layer, head);
            let d = difference(layer, head);
            let colour = if d.is_finite() {
                legend::colour(ColorMap::Diverging, (d / largest + 1.0) / 2.0)
            } else {
                egui::Color32::from_gray(90)
            };
            painter.rect_filled(cell_rect, 0.0, colour);
            if (layer, head) == (state.layer, state.head) {
                grid::mark_selected(ui, &painter, cell_rect);
            }
            if response.clicked()
                && response
                    .interact_pointer_pos()
                    .is_some_and(|p| cell_rect.contains(p))
            {
                state.layer = layer;
                state.head = head;
            }
        }
    }
}

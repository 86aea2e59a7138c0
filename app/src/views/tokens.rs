//! The token panel: per token across layers, the hidden-state norm after each layer, the
//! attention the token receives (mean over queries and heads) and the norm of its value vectors.
//! A line per marked token in three plots, a tokens × layers heatmap of one quantity (each
//! layer scaled to its own largest value, so a residual peak or a sink stands out in every
//! layer), and the residual stream's largest activations after the selected layer. A
//! first-token sink shows as a token whose hidden norm jumps, that receives most attention, and
//! whose value norm is small; ViT artifact patches and registers the same way. Marked tokens
//! are drawn in their line colour in the head view's axes and the token lines too.

use super::state::{Tab, TokenQuantity, ViewState};
use super::{View, ViewAction, ViewInfo, legend};
use crate::caches::token_figures::TokenFigures;
use crate::document::Document;
use eframe::egui;
use egui_plot::{Legend, Line, LineStyle, Plot, PlotPoints};
use std::sync::Arc;

pub struct TokensView;

impl View for TokensView {
    fn info(&self) -> &'static ViewInfo {
        &ViewInfo {
            tab: Tab::Tokens,
            name: "Token panel",
            help: "per token across layers: hidden-state norm, attention received, value norm",
            command_name: "tokens",
            takes_head: false,
        }
    }

    fn available(&self, doc: &Document, input: usize) -> bool {
        doc.session.token_norms(input, 0).is_some()
    }

    fn shows_metrics(&self) -> bool {
        // The attention each token receives comes from the metrics pass.
        true
    }

    fn ui(&self, ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState) -> Vec<ViewAction> {
        controls(ui, doc, state);
        egui::ScrollArea::vertical().show(ui, |ui| show(ui, doc, state, true));
        Vec::new()
    }

    fn title(&self, doc: &Document, state: &ViewState) -> String {
        format!(
            "tokens across layers, input {} ({} tokens)",
            state.input,
            doc.tokens(state.input).len()
        )
    }

    fn body(&self, ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState) {
        show(ui, doc, state, false);
    }

    fn natural_size(&self, _doc: &Document, _state: &ViewState) -> egui::Vec2 {
        egui::vec2(1200.0, 900.0)
    }

    fn file_name(&self, _state: &ViewState) -> String {
        "tokens.png".to_string()
    }
}

/// The colours of the marked tokens' lines, in order.
const LINE_COLOURS: [egui::Color32; 6] = [
    egui::Color32::from_rgb(255, 120, 80),
    egui::Color32::from_rgb(90, 170, 255),
    egui::Color32::from_rgb(120, 220, 120),
    egui::Color32::from_rgb(240, 200, 60),
    egui::Color32::from_rgb(220, 120, 230),
    egui::Color32::from_rgb(100, 220, 220),
];

/// The colour a marked token is drawn in, everywhere it is marked: the `k`-th marked token's
/// line colour.
pub fn mark_colour(k: usize) -> egui::Color32 {
    LINE_COLOURS[k % LINE_COLOURS.len()]
}

/// The most marked tokens drawn as lines.
const MAX_LINES: usize = 6;

fn controls(ui: &mut egui::Ui, doc: &Document, state: &mut ViewState) {
    ui.horizontal_wrapped(|ui| {
        ui.label("heatmap:");
        for q in TokenQuantity::ALL {
            ui.selectable_value(&mut state.tokens.quantity, q, q.label());
        }
        ui.separator();
        ui.label("marked:");
        let tokens = doc.tokens(state.input);
        let mut unmark = None;
        for &t in &state.tokens.marked {
            let label = format!("#{t} {} ×", tokens.get(t).map_or("?", |s| s.as_str()));
            if ui.small_button(label).on_hover_text("unmark").clicked() {
                unmark = Some(t);
            }
        }
        if let Some(t) = unmark {
            state.tokens.marked.retain(|&m| m != t);
        }
        if state.tokens.marked.is_empty() {
            ui.small("(click a token in the heatmap; shown: the first and the highest-norm token)");
        }
    });
}

/// The tokens drawn as lines: the marked ones, or the first token and the token with the
/// largest hidden-state norm in any layer.
fn lined_tokens(figures: &TokenFigures, state: &ViewState) -> Vec<usize> {
    let t = figures.tokens;
    let marked: Vec<usize> = state
        .tokens
        .marked
        .iter()
        .copied()
        .filter(|&m| m < t)
        .collect();
    if !marked.is_empty() {
        return marked.into_iter().take(MAX_LINES).collect();
    }
    let mut picks = vec![0];
    if let Some(norms) = &figures.hidden_norm {
        let peak = norms
            .iter()
            .enumerate()
            .filter(|(i, _)| i % t.max(1) != 0)
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i % t.max(1));
        picks.extend(peak);
    }
    picks.retain(|&p| p < t);
    picks
}

fn show(ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState, interactive: bool) {
    let input = state.input;
    state.clamp_tokens(doc.tokens(input).len());
    let Some(figures) = doc.caches.token_figures.get(doc, input) else {
        ui.label("no token figures for this input");
        return;
    };
    if figures.hidden_norm.is_none() && figures.value_norm.is_none() {
        ui.label(
            "this session holds no hidden-state or value norms (made before headwise captured \
             them): trace it again",
        );
        return;
    }
    let lined = lined_tokens(&figures, state);
    let names: Vec<String> = lined
        .iter()
        .map(|&t| {
            format!(
                "#{t} {}",
                doc.tokens(input).get(t).map_or("?", |s| s.as_str())
            )
        })
        .collect();
    let plot_width = (ui.available_width() / 3.0 - 8.0).max(180.0);
    ui.horizontal(|ui| {
        for (title, values) in [
            ("hidden-state norm", &figures.hidden_norm),
            ("attention received", &figures.received),
            ("value norm (mean over key heads)", &figures.value_norm),
        ] {
            ui.vertical(|ui| {
                ui.set_width(plot_width);
                ui.strong(title);
                match values {
                    Some(values) => plot(ui, title, values, &figures, &lined, &names, plot_width),
                    None => {
                        ui.small(if doc.metrics().is_none() {
                            "working out the attention each token receives…"
                        } else {
                            "not in this session"
                        });
                    }
                }
            });
        }
    });
    ui.add_space(8.0);
    let quantity = state.tokens.quantity;
    let values = match quantity {
        TokenQuantity::HiddenNorm => &figures.hidden_norm,
        TokenQuantity::Received => &figures.received,
        TokenQuantity::ValueNorm => &figures.value_norm,
    };
    legend::show(
        ui,
        state.style.colormap,
        &format!("{} (each layer scaled to its largest)", quantity.label()),
        "0",
        "max",
    );
    if let Some(values) = values
        && let Some(clicked) = heatmap(ui, doc, state, &figures, values, &lined, interactive)
    {
        if let Some(at) = state.tokens.marked.iter().position(|&m| m == clicked) {
            state.tokens.marked.remove(at);
        } else {
            state.tokens.marked.push(clicked);
        }
    }
    massive(ui, doc, state);
    relevance(ui, doc, state);
}

/// Each token's relevance to the gradient run's target (Chefer et al.), as the tokens' text on
/// a background from the colour map: the target row's own token (relevant to itself through
/// the identity) is left out of the scale so that the others show.
fn relevance(ui: &mut egui::Ui, doc: &Document, state: &ViewState) {
    let input = state.input;
    let (Some(values), Some(target)) = (
        doc.session.relevance(input),
        doc.session.meta.inputs[input].target,
    ) else {
        return;
    };
    let tokens = doc.tokens(input);
    let largest = values
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != target.row)
        .fold(0.0f32, |m, (_, &v)| m.max(v))
        .max(f32::MIN_POSITIVE);
    ui.add_space(6.0);
    ui.strong(format!(
        "relevance to the target {} (Chefer et al.; scaled to the largest other than token #{})",
        super::image::target_label(doc, input),
        target.row
    ));
    ui.horizontal_wrapped(|ui| {
        ui.spacing_mut().item_spacing.x = 1.0;
        for (i, (token, &value)) in tokens.iter().zip(&values).enumerate() {
            let share = if i == target.row {
                1.0
            } else {
                value / largest
            };
            let background = legend::colour(state.style.colormap, share.clamp(0.0, 1.0));
            let text = if share > 0.6 {
                egui::Color32::BLACK
            } else {
                egui::Color32::WHITE
            };
            ui.label(
                egui::RichText::new(token.as_str())
                    .monospace()
                    .background_color(background)
                    .color(text),
            )
            .on_hover_text(format!("#{i}: relevance {value:.4}"));
        }
    });
}

fn plot(
    ui: &mut egui::Ui,
    id: &str,
    values: &[f32],
    figures: &TokenFigures,
    lined: &[usize],
    names: &[String],
    width: f32,
) {
    let median: Vec<[f64; 2]> = values
        .chunks_exact(figures.tokens.max(1))
        .enumerate()
        .map(|(l, row)| {
            let mut sorted = row.to_vec();
            sorted.sort_by(f32::total_cmp);
            [
                l as f64,
                sorted.get(sorted.len() / 2).copied().unwrap_or(0.0) as f64,
            ]
        })
        .collect();
    Plot::new(("token plot", id))
        .width(width)
        .height(220.0)
        .legend(Legend::default())
        .x_axis_label("layer")
        .allow_zoom(false)
        .allow_drag(false)
        .allow_scroll(false)
        .include_y(0.0)
        .show(ui, |p| {
            for (k, (&t, name)) in lined.iter().zip(names).enumerate() {
                let points: Vec<[f64; 2]> = TokenFigures::across_layers(values, figures.tokens, t)
                    .into_iter()
                    .enumerate()
                    .map(|(l, v)| [l as f64, v as f64])
                    .collect();
                p.line(
                    Line::new(name.clone(), PlotPoints::from(points))
                        .color(LINE_COLOURS[k % LINE_COLOURS.len()])
                        .width(2.0),
                );
            }
            p.line(
                Line::new("median token", PlotPoints::from(median))
                    .color(egui::Color32::GRAY)
                    .style(LineStyle::dashed_dense()),
            );
        });
}

/// Tokens across, layers down, each layer scaled to its largest value; columns pooled (max) to
/// the pixels there are. Returns the token clicked, if any.
fn heatmap(
    ui: &mut egui::Ui,
    doc: &Document,
    state: &ViewState,
    figures: &TokenFigures,
    values: &[f32],
    lined: &[usize],
    interactive: bool,
) -> Option<usize> {
    let (layers, t) = (figures.layers, figures.tokens);
    if layers == 0 || t == 0 {
        return None;
    }
    let left = 40.0;
    let width = (ui.available_width() - left).max(100.0);
    let row_height = (360.0 / layers as f32).clamp(6.0, 24.0);
    let size = egui::vec2(left + width, row_height * layers as f32 + 18.0);
    let sense = if interactive {
        egui::Sense::click()
    } else {
        egui::Sense::hover()
    };
    let (rect, response) = ui.allocate_exact_size(size, sense);
    let painter = ui.painter_at(rect);
    let columns = t.min(width as usize).max(1);
    let column_width = width / columns as f32;
    let text = ui.visuals().text_color();
    for (l, row) in values.chunks_exact(t).enumerate() {
        let max = row.iter().fold(0.0f32, |m, v| m.max(*v));
        let y = rect.top() + l as f32 * row_height;
        if l % (layers / 12).max(1) == 0 {
            painter.text(
                egui::pos2(rect.left() + left - 4.0, y + row_height / 2.0),
                egui::Align2::RIGHT_CENTER,
                format!("L{l}"),
                egui::FontId::proportional(10.0),
                text,
            );
        }
        for c in 0..columns {
            let cells = &row[c * t / columns..((c + 1) * t / columns).max(c * t / columns + 1)];
            let v = cells.iter().fold(0.0f32, |m, x| m.max(*x));
            let shade = if max > 0.0 { v / max } else { 0.0 };
            let x = rect.left() + left + c as f32 * column_width;
            painter.rect_filled(
                egui::Rect::from_min_size(
                    egui::pos2(x, y),
                    egui::vec2(column_width + 0.5, row_height),
                ),
                0.0,
                legend::colour(state.style.colormap, shade),
            );
        }
    }
    // Generated tokens: a band under their columns in the generated colour.
    if let Some(g) = doc.first_generated(state.input) {
        let x = rect.left() + left + (g * columns / t) as f32 * column_width;
        let base = rect.top() + row_height * layers as f32;
        painter.rect_filled(
            egui::Rect::from_min_max(
                egui::pos2(x, base + 1.0),
                egui::pos2(rect.right(), base + 4.0),
            ),
            0.0,
            super::head::GENERATED,
        );
    }
    // The lined tokens, marked under the heatmap in their line colours.
    let base = rect.top() + row_height * layers as f32;
    for (k, &m) in lined.iter().enumerate() {
        let x = rect.left() + left + (m * columns / t) as f32 * column_width + column_width / 2.0;
        painter.line_segment(
            [egui::pos2(x, base + 2.0), egui::pos2(x, base + 16.0)],
            egui::Stroke::new(2.0, LINE_COLOURS[k % LINE_COLOURS.len()]),
        );
    }
    let pointer = response.hover_pos()?;
    let column = ((pointer.x - rect.left() - left) / column_width).floor();
    let layer = ((pointer.y - rect.top()) / row_height).floor();
    if column < 0.0 || layer < 0.0 || layer as usize >= layers {
        return None;
    }
    let token = (column as usize * t / columns).min(t - 1);
    let layer = layer as usize;
    let label = doc
        .tokens(state.input)
        .get(token)
        .cloned()
        .unwrap_or_default();
    let value = values[layer * t + token];
    response.clone().on_hover_text_at_pointer(format!(
        "token #{token} {label:?}, layer {layer}: {value:.4}{}",
        if interactive {
            "\nclick to mark or unmark"
        } else {
            ""
        }
    ));
    response.clicked().then_some(token)
}

/// The residual stream's largest activations after the selected layer.
fn massive(ui: &mut egui::Ui, doc: &Document, state: &ViewState) {
    let Some(rows) = doc.session.massive_activations(state.input, state.layer) else {
        return;
    };
    let tokens = doc.tokens(state.input);
    ui.add_space(6.0);
    ui.strong(format!(
        "largest activations after layer {} (token, channel, value)",
        state.layer
    ));
    ui.horizontal_wrapped(|ui| {
        for [token, channel, value] in rows.iter().take(8) {
            let name = tokens.get(*token as usize).map_or("?", |s| s.as_str());
            ui.monospace(format!("#{token} {name:?} ch {channel}: {value:.1}"));
            ui.separator();
        }
    });
}

//! BertViz-style token lines: queries on the left, keys on the right, a line for each weight,
//! as strong as the weight. Several heads of the layer at once, each in its own colour; hovering
//! a query shows only its lines.

use super::state::ViewState;
use crate::document::Document;
use eframe::egui;

/// Past this many tokens the lines are an unreadable wall, so the view says so instead.
pub const MAX_TOKENS: usize = 512;

const PALETTE: [egui::Color32; 8] = [
    egui::Color32::from_rgb(31, 119, 180),
    egui::Color32::from_rgb(255, 127, 14),
    egui::Color32::from_rgb(44, 160, 44),
    egui::Color32::from_rgb(214, 39, 40),
    egui::Color32::from_rgb(148, 103, 189),
    egui::Color32::from_rgb(140, 86, 75),
    egui::Color32::from_rgb(227, 119, 194),
    egui::Color32::from_rgb(23, 190, 207),
];

pub fn head_colour(i: usize) -> egui::Color32 {
    PALETTE[i % PALETTE.len()]
}

/// The head picker: which heads of the layer to draw besides the selected one.
pub fn controls(ui: &mut egui::Ui, doc: &Document, state: &mut ViewState) {
    ui.horizontal_wrapped(|ui| {
        ui.label("heads:");
        for h in 0..doc.heads() {
            let on = h == state.head || state.line_heads.contains(&h);
            let text = egui::RichText::new(format!("{h}")).color(if on {
                head_colour(h)
            } else {
                ui.visuals().weak_text_color()
            });
            if ui.selectable_label(on, text).clicked() && h != state.head {
                if on {
                    state.line_heads.retain(|&x| x != h);
                } else {
                    state.line_heads.push(h);
                }
            }
        }
    });
}

pub fn show(ui: &mut egui::Ui, doc: &Document, state: &ViewState) {
    let tokens = doc.tokens(state.input);
    let visible = super::head::visible(doc, state);
    if visible.len() > MAX_TOKENS {
        ui.label(format!(
            "Token lines are drawn up to {MAX_TOKENS} tokens; this input has {}. The heatmap shows it all.",
            visible.len()
        ));
        return;
    }
    let mut heads = vec![state.head];
    heads.extend(
        state
            .line_heads
            .iter()
            .copied()
            .filter(|&h| h != state.head),
    );
    let row_h = 16.0;
    let width = ui.available_width().clamp(300.0, 700.0);
    let (rect, response) = ui.allocate_exact_size(
        egui::vec2(width, row_h * visible.len() as f32 + 8.0),
        egui::Sense::hover(),
    );
    let painter = ui.painter_at(rect);
    let text = ui.visuals().text_color();
    let font = egui::FontId::monospace(11.0);
    let left_x = rect.left() + width * 0.3;
    let right_x = rect.right() - width * 0.3;
    let y = |v: usize| rect.top() + 4.0 + (v as f32 + 0.5) * row_h;
    let hovered_query = response.hover_pos().and_then(|p| {
        (p.x < (left_x + right_x) / 2.0).then(|| ((p.y - rect.top() - 4.0) / row_h) as usize)
    });
    for (v, &t) in visible.iter().enumerate() {
        let label: String = tokens[t].chars().take(16).collect();
        // Tokens marked in the token panel keep their colour here.
        let colour = state
            .tokens
            .marked
            .iter()
            .position(|&m| m == t)
            .map_or_else(
                || {
                    if doc.first_generated(state.input).is_some_and(|g| t >= g) {
                        super::head::GENERATED
                    } else {
                        text
                    }
                },
                super::tokens::mark_colour,
            );
        painter.text(
            egui::pos2(left_x - 6.0, y(v)),
            egui::Align2::RIGHT_CENTER,
            &label,
            font.clone(),
            colour,
        );
        painter.text(
            egui::pos2(right_x + 6.0, y(v)),
            egui::Align2::LEFT_CENTER,
            &label,
            font.clone(),
            colour,
        );
    }
    let t = tokens.len();
    for &head in &heads {
        let colour = head_colour(head);
        // Every row from the matrix; where attention is computed from q, k and lse (long
        // inputs), only the hovered query's row, computed on demand.
        let rows: Vec<(usize, Vec<f32>)> = match doc.head(state.input, state.layer, head) {
            Some(weights) => visible
                .iter()
                .enumerate()
                .filter(|(qv, _)| hovered_query.is_none_or(|h| h == *qv))
                .map(|(qv, &q)| (qv, weights[q * t..(q + 1) * t].to_vec()))
                .collect(),
            None => hovered_query
                .and_then(|qv| Some((qv, doc.row(state.input, state.layer, head, visible[qv])?)))
                .into_iter()
                .collect(),
        };
        for (qv, row) in rows {
            for (kv, &k) in visible.iter().enumerate() {
                let w = row[k];
                if w < 0.01 {
                    continue;
                }
                let alpha = (w.sqrt() * 255.0) as u8;
                painter.line_segment(
                    [egui::pos2(left_x, y(qv)), egui::pos2(right_x, y(kv))],
                    egui::Stroke::new(
                        1.0 + 2.0 * w,
                        egui::Color32::from_rgba_unmultiplied(
                            colour.r(),
                            colour.g(),
                            colour.b(),
                            alpha,
                        ),
                    ),
                );
            }
        }
    }
}

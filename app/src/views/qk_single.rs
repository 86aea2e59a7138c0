//! The query-key view's single head: pan, zoom or an orbit in 3D, the token under the mouse in
//! its sentence (the nearest point, found on the screen positions the camera gives), a clicked
//! query's lines to its input's keys, and image corpora's patches drawn as thumbnails.

use super::camera::Camera;
use super::picture::{has_pictures, patch_uv, picture_texture};
use super::qk_style::{KEY, QUERY, point_style};
use super::state::ViewState;
use crate::caches::corpus_index::CorpusIndex;
use crate::document::Document;
use eframe::egui;
use std::sync::Arc;

/// A few tokens either side of `token`, the token itself in brackets.
fn in_sentence(tokens: &[String], token: usize) -> String {
    let from = token.saturating_sub(10);
    let to = (token + 11).min(tokens.len());
    let mut out = String::new();
    if from > 0 {
        out.push('…');
    }
    for (i, t) in tokens.iter().enumerate().take(to).skip(from) {
        if i == token {
            out.push_str(&format!(" [{}]", t.trim()));
        } else {
            out.push(' ');
            out.push_str(t.trim());
        }
    }
    if to < tokens.len() {
        out.push_str(" …");
    }
    out
}

pub fn show(ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState) {
    let dims = state.qk.dims();
    let (layer, head) = (state.layer, state.head);
    let Some((shown, layout)) = doc.projections.best(state.qk.method, layer, head, dims) else {
        ui.label("laying out …");
        return;
    };
    if shown != state.qk.method {
        ui.small(format!(
            "showing {} until {} is done",
            shown.label(),
            state.qk.method.label()
        ));
    }
    let size = ui.available_size().max(egui::vec2(200.0, 200.0));
    let (rect, response) = ui.allocate_exact_size(size, egui::Sense::click_and_drag());
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 0.0, ui.visuals().extreme_bg_color);
    let three_d = state.qk.three_d;
    let qk = &mut state.qk;
    if response.dragged() {
        let delta = response.drag_delta();
        let orbit = three_d
            && !ui.input(|i| i.modifiers.shift)
            && !response.dragged_by(egui::PointerButton::Secondary);
        qk.camera
            .drag(delta.x, delta.y, rect.width(), rect.height(), orbit);
    }
    if response.double_clicked() {
        qk.camera = Camera::default();
    }
    if let Some(pos) = response.hover_pos() {
        let (scroll, zoom) = ui.input(|i| (i.smooth_scroll_delta.y, i.zoom_delta()));
        let factor = zoom * (scroll * 0.002).exp();
        if factor != 1.0 {
            let at = [
                (pos.x - rect.left()) / rect.width() * 2.0 - 1.0,
                1.0 - (pos.y - rect.top()) / rect.height() * 2.0,
            ];
            qk.camera.zoom_at(factor, at, rect.width(), rect.height());
        }
    }
    let transform = qk.camera.transform(
        layout.centre,
        layout.radius,
        three_d,
        rect.width(),
        rect.height(),
    );
    let style = point_style(doc, state, layer, head, true);
    let cb = super::qk::callback(
        doc,
        &layout,
        style,
        &state.qk.camera,
        three_d,
        rect,
        state.qk.point_size,
    );
    painter.add(cb.into_shape(ui.clip_rect().intersect(rect)));

    let index = doc.caches.corpus_index.get(&doc.session);
    let n = index.tokens.len();
    let thumbnails = state.qk.thumbnails && has_pictures(doc);
    let needs_positions =
        response.hover_pos().is_some() || state.qk.selected.is_some() || thumbnails;
    let positions = if needs_positions {
        doc.caches.screen_positions.get(&layout, &transform, rect)
    } else {
        Arc::new(Vec::new())
    };
    let inputs = &doc.session.meta.inputs;
    if thumbnails {
        draw_thumbnails(
            ui,
            &painter,
            doc,
            &index,
            &positions,
            rect,
            state.qk.point_size,
        );
    }
    // The nearest point within a few points of the mouse.
    let hovered = response.hover_pos().and_then(|p| {
        positions
            .iter()
            .enumerate()
            .filter(|(_, q)| q.x.is_finite())
            .map(|(i, q)| (i, q.distance_sq(p)))
            .filter(|&(_, d)| d <= 36.0)
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    });
    if response.clicked() {
        state.qk.selected = hovered.filter(|&i| i < n);
    }
    if let Some(q) = state
        .qk
        .selected
        .filter(|&q| q < n && positions.len() == 2 * n)
    {
        let (input, token) = index.tokens[q];
        let (input, token) = (input as usize, token as usize);
        if let Some(row) = doc.row(input, layer, head, token) {
            let max = row.iter().copied().fold(0.0f32, f32::max).max(1e-12);
            // The text colour stands out on the plot's background in either theme.
            let line_colour = ui.visuals().strong_text_color();
            let from = positions[q];
            let start = n + index.starts[input];
            for (j, &w) in row.iter().enumerate() {
                let to = positions[start + j];
                if w < 0.02 * max || !to.x.is_finite() || !from.x.is_finite() {
                    continue;
                }
                let strength = w / max;
                let [r, g, b, _] = line_colour.to_array();
                let colour =
                    egui::Color32::from_rgba_unmultiplied(r, g, b, (50.0 + 205.0 * strength) as u8);
                painter.line_segment([from, to], egui::Stroke::new(0.5 + 2.5 * strength, colour));
            }
            painter.circle_stroke(from, 6.0, egui::Stroke::new(2.0, line_colour));
            let mut best: Vec<(usize, f32)> = row.iter().copied().enumerate().collect();
            best.sort_by(|a, b| b.1.total_cmp(&a.1));
            let font = egui::FontId::proportional(12.0);
            for &(j, w) in best.iter().take(3) {
                let to = positions[start + j];
                if to.x.is_finite() {
                    painter.text(
                        to + egui::vec2(6.0, -6.0),
                        egui::Align2::LEFT_BOTTOM,
                        format!("{} {w:.2}", inputs[input].tokens[j].trim()),
                        font.clone(),
                        ui.visuals().strong_text_color(),
                    );
                }
            }
            painter.text(
                from + egui::vec2(8.0, 8.0),
                egui::Align2::LEFT_TOP,
                format!("query {}", inputs[input].tokens[token].trim()),
                font,
                ui.visuals().strong_text_color(),
            );
        }
    }
    if let Some(i) = hovered {
        let is_key = i >= n;
        let (input, token) = index.tokens[i % n];
        let info = &inputs[input as usize];
        painter.circle_stroke(
            positions[i],
            5.0,
            egui::Stroke::new(1.5, ui.visuals().strong_text_color()),
        );
        response.on_hover_ui_at_pointer(|ui| {
            ui.strong(format!(
                "{} '{}'",
                if is_key { "key" } else { "query" },
                info.tokens[token as usize].trim()
            ));
            ui.label(format!("input {input}, token {token}"));
            ui.label(in_sentence(&info.tokens, token as usize));
            if let Some(norms) = doc.projections.norms(layer, head) {
                ui.small(format!("norm {:.3}", norms[i]));
            }
            if !is_key {
                ui.small("click: lines to the keys of its input");
            }
        });
    }
}

/// At most this many patch thumbnails are drawn at once (an even sample of those in view).
const MAX_THUMBNAILS: usize = 3000;

/// Image corpora: each point as its patch of the picture, framed in its query or key colour
/// (AttentionViz's image mode).
fn draw_thumbnails(
    ui: &egui::Ui,
    painter: &egui::Painter,
    doc: &Document,
    index: &CorpusIndex,
    positions: &[egui::Pos2],
    rect: egui::Rect,
    point_size: f32,
) {
    let n = index.tokens.len();
    let visible: Vec<usize> = (0..positions.len())
        .filter(|&i| rect.contains(positions[i]))
        .collect();
    let step = visible.len().div_ceil(MAX_THUMBNAILS).max(1);
    let side = (point_size * 3.0).max(8.0);
    for &i in visible.iter().step_by(step) {
        let (input, token) = index.tokens[i % n];
        let (input, token) = (input as usize, token as usize);
        let Some(uv) = patch_uv(doc, input, token) else {
            continue;
        };
        let Some(texture) = picture_texture(ui.ctx(), doc, input) else {
            continue;
        };
        let at = egui::Rect::from_center_size(positions[i], egui::vec2(side, side));
        painter.image(texture.id(), at, uv, egui::Color32::WHITE);
        let [r, g, b] = if i >= n { KEY } else { QUERY };
        painter.rect_stroke(
            at,
            0.0,
            egui::Stroke::new(1.0, egui::Color32::from_rgb(r, g, b)),
            egui::StrokeKind::Outside,
        );
    }
}

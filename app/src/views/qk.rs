//! The query-key view (AttentionViz): where each head's queries and keys sit in one joint space
//! over the whole corpus. The matrix view shows every head's scatter in a layer × head grid; the
//! single view shows one head with pan, zoom or an orbit in 3D, colouring, token search, the
//! token under the mouse in its sentence, and a clicked query's lines to its input's keys.
//!
//! Points are drawn by the scatter shader from GPU buffers; this file only chooses what to draw
//! and answers the mouse, with the same camera matrix the shader uses.

use super::camera::{Camera, apply};
use super::state::{ColourBy, ViewState};
use super::{grid, legend};
use crate::document::Document;
use crate::projections::Layout;
use crate::render::colormap::ColorMap;
use crate::render::scatter::{LayoutKey, PointStyle, ScatterCallback};
use eframe::egui;
use headwise_engine::analysis::projection::Method;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

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

/// AttentionViz's colours: queries green, keys pink.
const QUERY: [u8; 3] = [95, 185, 108];
const KEY: [u8; 3] = [227, 119, 194];
/// Ten distinguishable colours for inputs (Tableau 10).
const CATEGORIES: [[u8; 3]; 10] = [
    [78, 121, 167],
    [242, 142, 43],
    [225, 87, 89],
    [118, 183, 178],
    [89, 161, 79],
    [237, 201, 72],
    [176, 122, 161],
    [255, 157, 167],
    [156, 117, 95],
    [186, 176, 172],
];

fn pack([r, g, b]: [u8; 3], alpha: u8) -> u32 {
    u32::from_le_bytes([r, g, b, alpha])
}

/// Each of the N corpus tokens as (input, token), and each input's first corpus index.
pub struct CorpusIndex {
    pub tokens: Vec<(u32, u32)>,
    pub starts: Vec<usize>,
}

fn corpus_index(ctx: &egui::Context, doc: &Document) -> Arc<CorpusIndex> {
    let slot = egui::Id::unique("headwise corpus index");
    if let Some((generation, index)) = ctx.data(|d| d.get_temp::<(u64, Arc<CorpusIndex>)>(slot))
        && generation == doc.generation
    {
        return index;
    }
    let mut tokens = Vec::new();
    let mut starts = Vec::new();
    for (i, input) in doc.session.meta.inputs.iter().enumerate() {
        starts.push(tokens.len());
        tokens.extend((0..input.tokens.len() as u32).map(|t| (i as u32, t)));
    }
    let index = Arc::new(CorpusIndex { tokens, starts });
    ctx.data_mut(|d| d.insert_temp(slot, (doc.generation, index.clone())));
    index
}

/// A token as a search sees it: lower case, without the tokenizer's word markers.
fn normalise_token(token: &str) -> String {
    token
        .trim()
        .trim_start_matches("##")
        .trim_start_matches('Ġ')
        .trim_start_matches('▁')
        .to_lowercase()
}

/// The colours and sizes of one head's 2N points for the view's settings, kept in egui's
/// memory until they change.
fn point_style(
    ctx: &egui::Context,
    doc: &Document,
    state: &ViewState,
    layer: usize,
    head: usize,
    highlight: bool,
) -> PointStyle {
    let qk = &state.qk;
    let per_head = qk.colour == ColourBy::Norm || qk.size_by_norm;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (
        doc.generation,
        qk.colour,
        qk.size_by_norm,
        qk.search.trim(),
        highlight,
    )
        .hash(&mut hasher);
    if per_head {
        (layer, head, doc.projections.norms(layer, head).is_some()).hash(&mut hasher);
    }
    let key = hasher.finish();
    // One slot per head (or one for all heads when no setting depends on the head), replaced
    // when the settings change: a style of a million points is 8 MB.
    let slot = egui::Id::unique((
        "headwise qk style",
        per_head.then_some((layer, head)),
        highlight,
    ));
    if let Some((stored, style)) = ctx.data(|d| d.get_temp::<(u64, PointStyle)>(slot))
        && stored == key
    {
        return style;
    }
    let index = corpus_index(ctx, doc);
    let n = index.tokens.len();
    let inputs = &doc.session.meta.inputs;
    let norms = doc.projections.norms(layer, head);
    let max_norm = norms
        .as_ref()
        .map_or(1.0, |v| v.iter().copied().fold(0.0f32, f32::max).max(1e-12));
    // Colours span the head's own range of norms, so differences between tokens show.
    let min_norm = norms
        .as_ref()
        .map_or(0.0, |v| v.iter().copied().fold(f32::INFINITY, f32::min))
        .min(max_norm);
    let norm_span = (max_norm - min_norm).max(1e-12);
    let max_position = inputs
        .iter()
        .map(|i| i.tokens.len())
        .max()
        .unwrap_or(1)
        .max(2)
        - 1;
    let search = normalise_token(&qk.search);
    let searching = !search.is_empty();
    let alpha = if highlight { 200 } else { 170 };
    let mut colours = Vec::with_capacity(2 * n);
    let mut sizes = Vec::with_capacity(2 * n);
    for i in 0..2 * n {
        let is_key = i >= n;
        let (input, token) = index.tokens[i % n];
        let rgb = match qk.colour {
            ColourBy::QueryKey => {
                if is_key {
                    KEY
                } else {
                    QUERY
                }
            }
            ColourBy::Position => ColorMap::Viridis.sample(token as f32 / max_position as f32),
            ColourBy::NormalisedPosition => {
                let t = inputs[input as usize].tokens.len().max(2) - 1;
                ColorMap::Viridis.sample(token as f32 / t as f32)
            }
            ColourBy::Input => CATEGORIES[input as usize % CATEGORIES.len()],
            ColourBy::Norm => match &norms {
                Some(v) => ColorMap::Viridis.sample((v[i] - min_norm) / norm_span),
                None => [150, 150, 150],
            },
        };
        let mut size = match (&norms, qk.size_by_norm) {
            (Some(v), true) => 0.4 + 1.2 * v[i] / max_norm,
            _ => 1.0,
        };
        let mut a = alpha;
        if searching {
            let text = &inputs[input as usize].tokens[token as usize];
            if normalise_token(text) == search {
                size *= 2.2;
                a = 255;
            } else {
                a = 28;
            }
        }
        colours.push(pack(rgb, a));
        sizes.push(size);
    }
    let style = PointStyle {
        key,
        colours: Arc::new(colours),
        sizes: Arc::new(sizes),
    };
    ctx.data_mut(|d| d.insert_temp(slot, (key, style.clone())));
    style
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

fn colour_legend(ui: &mut egui::Ui, doc: &Document, state: &ViewState) {
    match state.qk.colour {
        ColourBy::QueryKey => {
            ui.horizontal(|ui| {
                for (rgb, label) in [(QUERY, "query"), (KEY, "key")] {
                    let (rect, _) =
                        ui.allocate_exact_size(egui::vec2(10.0, 10.0), egui::Sense::hover());
                    ui.painter().circle_filled(
                        rect.center(),
                        5.0,
                        egui::Color32::from_rgb(rgb[0], rgb[1], rgb[2]),
                    );
                    ui.label(label);
                }
            });
        }
        ColourBy::Position => {
            let max = doc
                .session
                .meta
                .inputs
                .iter()
                .map(|i| i.tokens.len())
                .max()
                .unwrap_or(1);
            legend::show(
                ui,
                ColorMap::Viridis,
                "position",
                "0",
                &format!("{}", max.saturating_sub(1)),
            );
        }
        ColourBy::NormalisedPosition => {
            legend::show(ui, ColorMap::Viridis, "position / length", "0", "1")
        }
        ColourBy::Input => {
            ui.label("colour: input (ten colours, repeating)");
        }
        ColourBy::Norm => legend::show(ui, ColorMap::Viridis, "norm", "head's min", "max"),
    }
}

/// Draws the view; returns what the app should compute.
pub fn show(ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState) -> Vec<QkAction> {
    let dims = state.qk.dims();
    let mut actions = Vec::new();
    if doc.session.corpus_tokens() < 2 {
        ui.label("The query-key view needs at least two tokens: run a corpus or a longer prompt.");
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
        single(ui, doc, state);
    } else {
        matrix(ui, doc, state);
    }
    actions
}

fn callback(
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
            grid::labels(
                ui,
                &painter,
                rect,
                cell,
                layers,
                (0..heads).map(|h| format!("H{h}")),
            );
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
                            let style = point_style(ui.ctx(), doc, state, layer, head, false);
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

/// Screen positions (points) of every point under a camera matrix, NaN behind the eye.
fn screen_positions(
    layout: &Layout,
    transform: &[[f32; 4]; 4],
    rect: egui::Rect,
) -> Vec<egui::Pos2> {
    let dims = layout.dims;
    layout
        .points
        .chunks_exact(dims)
        .map(|p| {
            let c = apply(transform, [p[0], p[1], if dims > 2 { p[2] } else { 0.0 }]);
            if c[3] <= 0.0 {
                return egui::pos2(f32::NAN, f32::NAN);
            }
            egui::pos2(
                rect.left() + (c[0] / c[3] * 0.5 + 0.5) * rect.width(),
                rect.top() + (0.5 - c[1] / c[3] * 0.5) * rect.height(),
            )
        })
        .collect()
}

/// [`screen_positions`], kept in egui's memory while the layout, camera and rectangle stay the
/// same: moving the mouse over a million still points then costs one nearest-point search.
fn cached_screen_positions(
    ctx: &egui::Context,
    layout: &Layout,
    transform: &[[f32; 4]; 4],
    rect: egui::Rect,
) -> Arc<Vec<egui::Pos2>> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    layout.version.hash(&mut hasher);
    for v in transform
        .iter()
        .flatten()
        .chain(&[rect.min.x, rect.min.y, rect.max.x, rect.max.y])
    {
        v.to_bits().hash(&mut hasher);
    }
    let key = hasher.finish();
    let slot = egui::Id::unique("headwise qk screen positions");
    if let Some((stored, positions)) = ctx.data(|d| d.get_temp::<(u64, Arc<Vec<egui::Pos2>>)>(slot))
        && stored == key
    {
        return positions;
    }
    let positions = Arc::new(screen_positions(layout, transform, rect));
    ctx.data_mut(|d| d.insert_temp(slot, (key, positions.clone())));
    positions
}

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

fn single(ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState) {
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
    let style = point_style(ui.ctx(), doc, state, layer, head, true);
    let cb = callback(
        doc,
        &layout,
        style,
        &state.qk.camera,
        three_d,
        rect,
        state.qk.point_size,
    );
    painter.add(cb.into_shape(ui.clip_rect().intersect(rect)));

    let index = corpus_index(ui.ctx(), doc);
    let n = index.tokens.len();
    let thumbnails = state.qk.thumbnails && has_pictures(doc);
    let needs_positions =
        response.hover_pos().is_some() || state.qk.selected.is_some() || thumbnails;
    let positions = if needs_positions {
        cached_screen_positions(ui.ctx(), &layout, &transform, rect)
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
        if let Some(weights) = doc.head(input, layer, head) {
            let t = inputs[input].tokens.len();
            let row = &weights[token * t..(token + 1) * t];
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

/// Whether any input of the corpus is a picture.
fn has_pictures(doc: &Document) -> bool {
    (0..doc.inputs()).any(|i| super::image::is_image(doc, i))
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
        let Some(uv) = super::image::patch_uv(doc, input, token) else {
            continue;
        };
        let Some(texture) = super::image::picture_texture(ui.ctx(), doc, input) else {
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

/// Whether the document can show the query-key view.
pub fn available(doc: &Document) -> bool {
    doc.session.corpus_tokens() >= 2
}

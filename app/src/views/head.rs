//! The head view: one head's (or an aggregate's) full T x T heatmap with pan and zoom, query
//! and key tokens on the axes, the weight under the mouse, a linear or log colour scale, and
//! special tokens hidden on request. Decoders also list their most likely next tokens.

use super::picture::{patch_uv, picture_texture};
use super::state::{Selection, Tab, ViewState};
use super::{View, ViewAction, ViewInfo, grid, legend, lines, tokens};
use crate::document::Document;
use crate::jobs::Repaint;
use crate::render::colormap::ColorMap;
use crate::render::heatmap::{
    HeatmapCallback, HeatmapStyle, Matrix, MatrixKey, MatrixSource, Region,
};
use eframe::egui;
use headwise_engine::analysis::aggregate::Reduce;
use headwise_engine::analysis::change::kl_divergence;
use headwise_engine::session::InputKind;
use std::sync::Arc;

const AXIS: f32 = 90.0;

/// The colour of tokens the model generated (`--generate`), in every view that names tokens.
pub const GENERATED: egui::Color32 = egui::Color32::from_rgb(140, 220, 140);

pub struct HeadView;

impl View for HeadView {
    fn info(&self) -> &'static ViewInfo {
        &ViewInfo {
            tab: Tab::Head,
            name: "Head view",
            help: "one head's (or an aggregate's) full heatmap, with token lines",
            command_name: "head",
            takes_head: true,
        }
    }

    fn ui(&self, ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState) -> Vec<ViewAction> {
        controls(ui, doc, state);
        ui.label(egui::RichText::new(title(state)).strong());
        let mut action = None;
        if state.show_lines {
            lines::controls(ui, doc, state);
            egui::ScrollArea::vertical().show(ui, |ui| {
                ui.horizontal_top(|ui| {
                    ui.vertical(|ui| {
                        ui.set_width(ui.available_width() * 0.55);
                        ui.set_height(ui.available_height().max(300.0));
                        action = show(ui, doc, state);
                    });
                    ui.vertical(|ui| lines::show(ui, doc, state));
                });
            });
        } else {
            action = show(ui, doc, state);
        }
        action.into_iter().collect()
    }

    fn title(&self, _doc: &Document, state: &ViewState) -> String {
        title(state)
    }

    fn body(&self, ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState) {
        show(ui, doc, state);
    }

    fn natural_size(&self, _doc: &Document, _state: &ViewState) -> egui::Vec2 {
        egui::vec2(900.0, 940.0)
    }

    fn file_name(&self, state: &ViewState) -> String {
        format!("head-L{}-H{}.png", state.layer, state.head)
    }

    fn select(
        &self,
        _doc: &Document,
        state: &mut ViewState,
        head: Option<(usize, usize)>,
        _options: &super::RenderOptions,
    ) -> anyhow::Result<()> {
        state.tab = Tab::Head;
        if let Some((layer, head)) = head {
            state.layer = layer;
            state.head = head;
        }
        state.selection = Selection::Head;
        Ok(())
    }
}

pub fn controls(ui: &mut egui::Ui, doc: &Document, state: &mut ViewState) {
    ui.horizontal_wrapped(|ui| {
        let (layers, heads) = (doc.layers(), doc.heads());
        grid::layer_and_head_pickers(ui, &mut state.layer, layers, Some((&mut state.head, heads)));
        egui::ComboBox::from_id_salt("matrix")
            .selected_text(selection_label(state.selection))
            .show_ui(ui, |ui| {
                for s in [
                    Selection::Head,
                    Selection::Layer(Reduce::Mean),
                    Selection::Layer(Reduce::Max),
                    Selection::Model(Reduce::Mean),
                    Selection::Model(Reduce::Max),
                ] {
                    ui.selectable_value(&mut state.selection, s, selection_label(s));
                }
                if doc.session.meta.inputs[state.input].base.is_some() {
                    ui.selectable_value(
                        &mut state.selection,
                        Selection::Change,
                        selection_label(Selection::Change),
                    );
                }
                if doc.session.has_gradient_attention(state.input) {
                    for signed in [true, false] {
                        let s = Selection::Gradient { signed };
                        ui.selectable_value(&mut state.selection, s, selection_label(s));
                    }
                }
            });
        ui.separator();
        ui.selectable_value(&mut state.style.log_scale, false, "linear");
        ui.selectable_value(&mut state.style.log_scale, true, "log");
        egui::ComboBox::from_id_salt("colour map")
            .selected_text(state.style.colormap.label())
            .show_ui(ui, |ui| {
                for map in ColorMap::CHOICES {
                    ui.selectable_value(&mut state.style.colormap, map, map.label());
                }
            });
        if doc.materialised(state.input) {
            ui.checkbox(&mut state.hide_special, "hide special tokens");
        } else {
            ui.label("pixels:")
                .on_hover_text("each pixel covers many cells at this zoom: their max or mean");
            ui.selectable_value(&mut state.region_reduce, Reduce::Max, "max");
            ui.selectable_value(&mut state.region_reduce, Reduce::Mean, "mean");
        }
        ui.checkbox(&mut state.show_lines, "token lines");
        let search = ui.add(
            egui::TextEdit::singleline(&mut state.find)
                .hint_text("jump to token")
                .desired_width(110.0),
        );
        let go = ui
            .button("next")
            .on_hover_text("zoom to the next token that matches");
        let entered = search.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        if go.clicked() || entered {
            jump_to_next(doc, state);
        }
        if ui.button("reset zoom").clicked() {
            state.window = None;
        }
    });
    let low = if state.style.log_scale {
        format!("{:.0e}", state.style.log_min)
    } else {
        "0".to_string()
    };
    legend::show(
        ui,
        state.style.colormap,
        "weight",
        &low,
        &format!("{}", state.style.vmax),
    );
}

/// Zooms the heatmap to the next token after the window's centre (wrapping round) that matches
/// the search, centred on its row and column; 64 tokens across.
fn jump_to_next(doc: &Document, state: &mut ViewState) {
    let visible = visible(doc, state);
    let tokens = doc.tokens(state.input);
    let labels: Vec<&str> = visible.iter().map(|&i| tokens[i].as_str()).collect();
    let n = visible.len() as f32;
    let window = state.window.unwrap_or([0.0, 0.0, n, n]);
    let from = (window[1] + window[3] / 2.0) as usize + 1;
    if let Some(v) = next_match(&labels, &state.find, from) {
        let span = 64.0f32.min(n);
        let start = (v as f32 + 0.5 - span / 2.0).clamp(0.0, n - span);
        state.window = Some([start, start, span, span]);
    }
}

/// The first of `tokens` at or after `from` (wrapping round) that contains `query`, compared as
/// the query-key view's search does (lower case, without word markers); None when none does or
/// the query is empty.
pub fn next_match(tokens: &[&str], query: &str, from: usize) -> Option<usize> {
    let query = super::qk_style::normalise_token(query);
    if query.is_empty() || tokens.is_empty() {
        return None;
    }
    let n = tokens.len();
    (0..n)
        .map(|k| (from + k) % n)
        .find(|&i| super::qk_style::normalise_token(tokens[i]).contains(&query))
}

pub fn selection_label(s: Selection) -> &'static str {
    match s {
        Selection::Head => "this head",
        Selection::Layer(Reduce::Mean) => "mean of the layer's heads",
        Selection::Layer(Reduce::Max) => "max of the layer's heads",
        Selection::Model(Reduce::Mean) => "mean of all heads",
        Selection::Model(Reduce::Max) => "max of all heads",
        Selection::Change => "difference from the base run (unedited, or the first model)",
        Selection::Gradient { signed: true } => "gradient × attention (signed)",
        Selection::Gradient { signed: false } => "gradient × attention (positive part)",
    }
}

/// The title of what is drawn, e.g. "layer 3, head 5".
pub fn title(state: &ViewState) -> String {
    match state.selection {
        Selection::Head => format!("layer {}, head {}", state.layer, state.head),
        Selection::Layer(_) => format!(
            "layer {}: {}",
            state.layer,
            selection_label(state.selection)
        ),
        Selection::Model(_) => selection_label(state.selection).to_string(),
        Selection::Change => format!(
            "layer {}, head {}: this run minus its base",
            state.layer, state.head
        ),
        Selection::Gradient { signed } => format!(
            "layer {}, head {}: ∂target/∂A ⊙ A{}",
            state.layer,
            state.head,
            if signed { "" } else { ", positive part" }
        ),
    }
}

/// The tokens the view shows (stored indices), after hiding special ones if asked (not done
/// for attention computed from q, k and lse, whose regions cover every token).
pub fn visible(doc: &Document, state: &ViewState) -> Vec<usize> {
    let key = MatrixKey::full(state.input, state.matrix());
    let hide = state.hide_special && doc.materialised(state.input);
    doc.visible_tokens(key, hide)
        .into_iter()
        .map(|i| i as usize)
        .collect()
}

/// Draws the heatmap with its axes in the space left in `ui`; a right-click on a key offers to
/// scale every query's attention to it in this head (an edit).
pub fn show(ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState) -> Option<ViewAction> {
    let info = doc.session.meta.inputs.get(state.input);
    let stale = match state.selection {
        Selection::Change => info.is_none_or(|i| i.base.is_none()),
        Selection::Gradient { .. } => !doc.session.has_gradient_attention(state.input),
        _ => false,
    };
    if stale {
        state.selection = Selection::Head;
    }
    let materialised = doc.materialised(state.input);
    if !materialised && !matches!(state.matrix(), Matrix::Head { .. }) {
        ui.label(
            "This input's attention is kept as q, k and lse (it is long), so only single heads \
             are drawn here: the mean or max over heads needs every head's full matrix. Trace \
             with --attention full to have them.",
        );
        return None;
    }
    let visible = visible(doc, state);
    let n = visible.len() as f32;
    if visible.is_empty() {
        ui.label("Nothing to show: every token of this input is a special token.");
        return None;
    }
    let tokens = doc.tokens(state.input);
    let available = ui.available_size();
    let side = (available.x - AXIS).min(available.y - AXIS).max(64.0);
    let (outer, _) =
        ui.allocate_exact_size(egui::vec2(side + AXIS, side + AXIS), egui::Sense::hover());
    let plot =
        egui::Rect::from_min_size(outer.min + egui::vec2(AXIS, AXIS), egui::vec2(side, side));
    let response = ui.interact(
        plot,
        ui.make_persistent_id("head heatmap"),
        egui::Sense::click_and_drag(),
    );
    let mut window = state.window.unwrap_or([0.0, 0.0, n, n]);

    // Zoom about the pointer with the wheel or a pinch; pan by dragging.
    if let Some(pointer) = response.hover_pos() {
        let (scroll, zoom) = ui.input(|i| (i.smooth_scroll_delta.y, i.zoom_delta()));
        let factor = zoom * (-scroll * 0.002).exp();
        if (factor - 1.0).abs() > 1e-4 {
            let u = (pointer - plot.min) / side;
            let new_w = (window[2] / factor).clamp(4.0f32.min(n), n);
            let new_h = (window[3] / factor).clamp(4.0f32.min(n), n);
            window[0] += u.x * (window[2] - new_w);
            window[1] += u.y * (window[3] - new_h);
            window[2] = new_w;
            window[3] = new_h;
        }
    }
    if response.dragged() {
        let d = response.drag_delta();
        window[0] -= d.x / side * window[2];
        window[1] -= d.y / side * window[3];
    }
    if response.double_clicked() {
        window = [0.0, 0.0, n, n];
    }
    window[0] = window[0].clamp(0.0, (n - window[2]).max(0.0));
    window[1] = window[1].clamp(0.0, (n - window[3]).max(0.0));
    state.window = (window != [0.0, 0.0, n, n]).then_some(window);

    let source: Arc<dyn MatrixSource> = doc.clone();
    let painter = ui.painter_at(outer);
    if materialised {
        let key = MatrixKey::full(state.input, state.matrix());
        // A difference is signed: the diverging map, linear, ±1 at its ends.
        let style = if matches!(
            state.selection,
            Selection::Change | Selection::Gradient { signed: true }
        ) {
            HeatmapStyle {
                colormap: ColorMap::Diverging,
                log_scale: false,
                vmax: 1.0,
                ..state.style
            }
        } else {
            state.style
        };
        painter.add(
            HeatmapCallback::new(source, key, plot, window, state.hide_special, style)
                .into_shape(ui.clip_rect()),
        );
    } else {
        draw_region(ui, &painter, doc, state, plot, window);
    }
    painter.rect_stroke(
        plot,
        0.0,
        ui.visuals().widgets.noninteractive.bg_stroke,
        egui::StrokeKind::Outside,
    );

    // Axis labels: every token when they fit, else every k-th; tokens the model generated in
    // their own colour.
    let text = ui.visuals().text_color();
    let first_generated = doc.first_generated(state.input);
    let label_colour = |token: usize| {
        if first_generated.is_some_and(|g| token >= g) {
            GENERATED
        } else {
            text
        }
    };
    let per_token = side / window[2];
    let font_size = per_token.clamp(7.0, 13.0);
    let font = egui::FontId::monospace(font_size);
    let every = ((font_size + 1.0) / per_token).ceil().max(1.0) as usize;
    let first = window[0].floor() as usize;
    let last = ((window[0] + window[2]).ceil() as usize).min(visible.len());
    // Image inputs: each patch is labelled with its piece of the picture when there is room.
    let picture = (per_token >= 6.0)
        .then(|| picture_texture(ui.ctx(), doc, state.input))
        .flatten();
    let patch_label = |pos: egui::Pos2, token: usize| -> bool {
        let (Some(texture), Some(uv)) = (&picture, patch_uv(doc, state.input, token)) else {
            return false;
        };
        let size = per_token.min(28.0);
        let rect = egui::Rect::from_center_size(pos, egui::vec2(size, size));
        painter.image(texture.id(), rect, uv, egui::Color32::WHITE);
        true
    };
    for v in (first..last).filter(|v| v % every == 0) {
        let x = plot.left() + (v as f32 + 0.5 - window[0]) * per_token;
        let size = per_token.min(28.0);
        if patch_label(egui::pos2(x, plot.top() - 4.0 - size / 2.0), visible[v]) {
            continue;
        }
        let label = clip_label(&tokens[visible[v]]);
        let colour = label_colour(visible[v]);
        let galley = painter.layout_no_wrap(label, font.clone(), colour);
        let pos = egui::pos2(x - galley.size().y / 2.0, plot.top() - 4.0);
        painter.add(
            egui::epaint::TextShape::new(pos, galley, colour)
                .with_angle(-std::f32::consts::FRAC_PI_2),
        );
    }
    let per_row = side / window[3];
    let every_row = ((font_size + 1.0) / per_row).ceil().max(1.0) as usize;
    let first_row = window[1].floor() as usize;
    let last_row = ((window[1] + window[3]).ceil() as usize).min(visible.len());
    for v in (first_row..last_row).filter(|v| v % every_row == 0) {
        let y = plot.top() + (v as f32 + 0.5 - window[1]) * per_row;
        let size = per_row.min(28.0);
        if patch_label(egui::pos2(plot.left() - 4.0 - size / 2.0, y), visible[v]) {
            continue;
        }
        painter.text(
            egui::pos2(plot.left() - 4.0, y),
            egui::Align2::RIGHT_CENTER,
            clip_label(&tokens[visible[v]]),
            font.clone(),
            label_colour(visible[v]),
        );
    }
    // Where the generated tokens start: a line across the heatmap on both axes.
    if let Some(g) = first_generated
        && let Some(v) = visible.iter().position(|&t| t >= g)
    {
        let stroke = egui::Stroke::new(1.5, GENERATED);
        let x = plot.left() + (v as f32 - window[0]) * per_token;
        if (plot.left()..=plot.right()).contains(&x) {
            painter.line_segment(
                [egui::pos2(x, plot.top()), egui::pos2(x, plot.bottom())],
                stroke,
            );
        }
        let y = plot.top() + (v as f32 - window[1]) * per_row;
        if (plot.top()..=plot.bottom()).contains(&y) {
            painter.line_segment(
                [egui::pos2(plot.left(), y), egui::pos2(plot.right(), y)],
                stroke,
            );
        }
    }
    // Tokens marked in the token panel: a tick in their colour on both axes.
    for (k, &marked) in state.tokens.marked.iter().enumerate() {
        let Some(v) = visible.iter().position(|&t| t == marked) else {
            continue;
        };
        let stroke = egui::Stroke::new(3.0, tokens::mark_colour(k));
        let x = plot.left() + (v as f32 + 0.5 - window[0]) * per_token;
        if (plot.left()..=plot.right()).contains(&x) {
            painter.line_segment(
                [egui::pos2(x, plot.top() - 7.0), egui::pos2(x, plot.top())],
                stroke,
            );
        }
        let y = plot.top() + (v as f32 + 0.5 - window[1]) * per_row;
        if (plot.top()..=plot.bottom()).contains(&y) {
            painter.line_segment(
                [egui::pos2(plot.left() - 7.0, y), egui::pos2(plot.left(), y)],
                stroke,
            );
        }
    }
    let small = egui::FontId::proportional(11.0);
    painter.text(
        outer.left_top() + egui::vec2(2.0, 2.0),
        egui::Align2::LEFT_TOP,
        "rows: query, columns: key",
        small,
        text,
    );

    let mut action = None;
    let menu_key = ui.make_persistent_id("head view key menu");
    if response.secondary_clicked()
        && let Some(pointer) = response.interact_pointer_pos()
    {
        let col = (window[0] + (pointer.x - plot.min.x) / side * window[2]) as usize;
        if let Some(&key) = visible.get(col) {
            ui.data_mut(|d| d.insert_temp(menu_key, key));
        }
    }
    let text_input = doc.session.meta.inputs[state.input].kind == InputKind::Text;
    if text_input && state.selection == Selection::Head {
        let key: Option<usize> = ui.data(|d| d.get_temp(menu_key));
        let (layer, head) = (state.layer, state.head);
        response.context_menu(|ui| {
            // The key was picked by a right-click, perhaps on another input: it must still be
            // one of this input's tokens.
            let Some((key, name)) = key.and_then(|k| Some((k, tokens.get(k)?))) else {
                return;
            };
            ui.label(format!("key {key} {name:?}, layer {layer}, head {head}"));
            for (label, factor) in [
                ("block every query's attention to it", "0"),
                ("halve it", "0.5"),
                ("double it", "2"),
            ] {
                if ui.button(label).clicked() {
                    action = Some(ViewAction::Edit(format!(
                        "scale:{layer}.{head}:{key}={factor}"
                    )));
                    ui.close();
                }
            }
        });
    }
    if let Some(pointer) = response.hover_pos() {
        let u = (pointer - plot.min) / side;
        let col = (window[0] + u.x * window[2]) as usize;
        let row = (window[1] + u.y * window[3]) as usize;
        if let (Some(&q), Some(&k)) = (visible.get(row), visible.get(col))
            && let Some(w) = doc.weight(state.input, state.matrix(), q, k)
        {
            let texture = picture_texture(ui.ctx(), doc, state.input);
            response.on_hover_ui_at_pointer(|ui| {
                for (role, token) in [("query", q), ("key", k)] {
                    ui.horizontal(|ui| {
                        ui.label(format!("{role} {token}: {:?}", tokens[token]));
                        if let (Some(texture), Some(uv)) =
                            (&texture, patch_uv(doc, state.input, token))
                        {
                            ui.add(egui::Image::new((texture.id(), egui::vec2(40.0, 40.0))).uv(uv));
                        }
                    });
                }
                ui.strong(format!("weight {w:.5}"));
            });
        }
    }
    action
}

/// Attention that is not materialised: the part of the head in `window` (token units), computed
/// from q, k and lse as block maxima (or means) at about the plot's resolution, in a job; the
/// last finished region is drawn where it lies meanwhile. At full zoom the pixels are the cells.
fn draw_region(
    ui: &egui::Ui,
    painter: &egui::Painter,
    doc: &Arc<Document>,
    state: &ViewState,
    plot: egui::Rect,
    window: [f32; 4],
) {
    let Matrix::Head { layer, head } = state.matrix() else {
        return;
    };
    let t = doc.tokens(state.input).len() as u32;
    // Snapped to a 64th of the span, so that a small pan asks for no new region.
    let snap = |start: f32, len: f32| -> [u32; 2] {
        let step = ((len / 64.0) as u32).max(1);
        let a = (start.floor() as u32 / step) * step;
        let b = ((start + len).ceil() as u32).div_ceil(step) * step;
        [a.min(t), b.min(t).max(a + 1)]
    };
    let rows = snap(window[1], window[3]);
    let cols = snap(window[0], window[2]);
    let span = (rows[1] - rows[0]).max(cols[1] - cols[0]);
    let screen = (plot.width() * ui.ctx().pixels_per_point()).round() as u32;
    let region = Region {
        rows,
        cols,
        pixels: span.min(screen.clamp(64, 1024)),
        reduce: state.region_reduce,
    };
    let inline = crate::jobs::inline_work(ui.ctx());
    let shown = doc.caches.regions.request(
        doc,
        (state.input, layer, head),
        region,
        &Repaint::new(ui.ctx()),
        inline,
    );
    let Some(shown) = shown else {
        painter.text(
            plot.center(),
            egui::Align2::CENTER_CENTER,
            "computing this head from q, k and lse…",
            egui::FontId::proportional(13.0),
            ui.visuals().text_color(),
        );
        return;
    };
    if shown != region {
        ui.ctx()
            .request_repaint_after(std::time::Duration::from_millis(50));
    }
    // Where the region lies on screen, in the current window.
    let per_x = plot.width() / window[2];
    let per_y = plot.height() / window[3];
    let rect = egui::Rect::from_min_max(
        egui::pos2(
            plot.left() + (shown.cols[0] as f32 - window[0]) * per_x,
            plot.top() + (shown.rows[0] as f32 - window[1]) * per_y,
        ),
        egui::pos2(
            plot.left() + (shown.cols[1] as f32 - window[0]) * per_x,
            plot.top() + (shown.rows[1] as f32 - window[1]) * per_y,
        ),
    );
    let side = shown.pixels as f32;
    let key = MatrixKey {
        region: Some(shown),
        ..MatrixKey::full(state.input, state.matrix())
    };
    let source: Arc<dyn MatrixSource> = doc.clone();
    painter.add(
        HeatmapCallback::new(
            source,
            key,
            rect,
            [0.0, 0.0, side, side],
            false,
            state.style,
        )
        .into_shape(ui.clip_rect().intersect(plot)),
    );
}

fn clip_label(token: &str) -> String {
    let shown: String = token.replace('\n', "⏎").chars().take(14).collect();
    if shown.is_empty() {
        "␣".into()
    } else {
        shown
    }
}

/// Decoders: the most likely next tokens with their probabilities.
pub fn next_tokens(ui: &mut egui::Ui, doc: &Document, input: usize) {
    let Some(info) = doc.session.meta.inputs.get(input) else {
        return;
    };
    if info.next_tokens.is_empty() {
        return;
    }
    ui.strong("next token");
    egui::Grid::new("next tokens").show(ui, |ui| {
        for t in &info.next_tokens {
            ui.monospace(format!("{:?}", t.token));
            let (rect, _) = ui.allocate_exact_size(egui::vec2(80.0, 10.0), egui::Sense::hover());
            ui.painter().rect_filled(
                egui::Rect::from_min_size(rect.min, egui::vec2(80.0 * t.prob, 10.0)),
                0.0,
                ui.visuals().selection.bg_fill,
            );
            ui.label(format!("{:.3}", t.prob));
            ui.end_row();
        }
    });
    next_token_change(ui, doc, input);
}

/// An edited run's next-token distribution against its base's: the KL divergence and the
/// tokens whose probability moved most.
fn next_token_change(ui: &mut egui::Ui, doc: &Document, input: usize) {
    let Some(base) = doc.session.meta.inputs.get(input).and_then(|i| i.base) else {
        return;
    };
    let (Some(edited), Some(before)) = (
        doc.session.next_token_probs(input),
        doc.session.next_token_probs(base),
    ) else {
        return;
    };
    if edited.len() != before.len() {
        return;
    }
    let kl = kl_divergence(&before, &edited);
    ui.small(format!(
        "against input {base} (its base): KL = {kl:.4} nats"
    ));
    let mut moved: Vec<(usize, f32)> = before
        .iter()
        .zip(&edited)
        .map(|(b, e)| e - b)
        .enumerate()
        .collect();
    moved.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    let tokenizer_label = |id: usize| {
        doc.session.meta.inputs[input]
            .next_tokens
            .iter()
            .chain(&doc.session.meta.inputs[base].next_tokens)
            .find(|t| t.id as usize == id)
            .map_or_else(|| format!("#{id}"), |t| format!("{:?}", t.token))
    };
    egui::Grid::new("next token change").show(ui, |ui| {
        ui.small("token");
        ui.small("before");
        ui.small("after");
        ui.end_row();
        for (id, delta) in moved.into_iter().take(6) {
            ui.monospace(tokenizer_label(id));
            ui.small(format!("{:.3}", before[id]));
            ui.colored_label(
                if delta >= 0.0 {
                    egui::Color32::from_rgb(120, 200, 120)
                } else {
                    egui::Color32::from_rgb(230, 120, 110)
                },
                format!("{:.3}", edited[id]),
            );
            ui.end_row();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::next_match;

    #[test]
    fn jump_to_token_finds_the_next_match_after_the_centre_wrapping_round() {
        let tokens = ["<s>", "ĠCall", "Ġme", "ĠIsh", "mael", ".", "ĠCall"];
        assert_eq!(next_match(&tokens, "call", 0), Some(1));
        assert_eq!(next_match(&tokens, "call", 2), Some(6));
        assert_eq!(next_match(&tokens, "CALL", 7), Some(1), "wraps round");
        assert_eq!(next_match(&tokens, "mael", 0), Some(4));
        assert_eq!(next_match(&tokens, "whale", 0), None);
        assert_eq!(next_match(&tokens, "  ", 0), None);
    }
}

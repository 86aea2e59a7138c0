//! The image view: the picture an image model saw, with a patch heatmap over it (one head's
//! attention from the query token, the mean or max over the layer's heads, or the attention
//! rollout), and under it a grid of small overlays (every head of the layer, or every layer for
//! the head) that follow the patch under the mouse.

use super::picture::{fitted, is_image, picture_texture};
use super::state::{ImageViewState, PatchGrid, PatchSource, Tab, ViewState};
use super::{RenderOptions, View, ViewAction, ViewInfo, grid};
use crate::document::Document;
use crate::jobs::Repaint;
use crate::render::heatmap::Matrix;
use eframe::egui;
use headwise_engine::analysis::aggregate::Reduce;
use headwise_engine::analysis::artifacts::OUTLIER_FACTOR;
use headwise_engine::analysis::rollout::Fusion;
use headwise_engine::session::InputInfo;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Side of the small overlays, in points.
const THUMB: f32 = 132.0;

pub struct ImageView;

impl View for ImageView {
    fn info(&self) -> &'static ViewInfo {
        &ViewInfo {
            tab: Tab::Image,
            name: "Image view",
            help: "an image input's picture with a head's attention, rollout or flow over it",
            command_name: "image",
            takes_head: true,
        }
    }

    fn available(&self, doc: &Document, input: usize) -> bool {
        is_image(doc, input)
    }

    fn opens_on(&self, doc: &Document, input: usize) -> bool {
        is_image(doc, input)
    }

    fn ui(&self, ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState) -> Vec<ViewAction> {
        controls(ui, doc, state);
        ui.label(egui::RichText::new(title(doc, state)).strong());
        egui::ScrollArea::vertical().show(ui, |ui| {
            show(ui, doc, state);
        });
        Vec::new()
    }

    fn title(&self, doc: &Document, state: &ViewState) -> String {
        title(doc, state)
    }

    fn body(&self, ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState) {
        show(ui, doc, state);
    }

    fn natural_size(&self, doc: &Document, state: &ViewState) -> egui::Vec2 {
        natural_size(doc, state)
    }

    fn file_name(&self, state: &ViewState) -> String {
        format!("image-L{}-H{}.png", state.layer, state.head)
    }

    fn select(
        &self,
        doc: &Document,
        state: &mut ViewState,
        head: Option<(usize, usize)>,
        _options: &RenderOptions,
    ) -> anyhow::Result<()> {
        if !is_image(doc, state.input) {
            anyhow::bail!("input {} is not an image", state.input);
        }
        state.tab = Tab::Image;
        if let Some((layer, head)) = head {
            state.layer = layer;
            state.head = head;
        }
        state.image.source = PatchSource::Head;
        state.image.query = 0;
        Ok(())
    }

    /// Each head's overlay on the picture.
    fn head_figure(&self, ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState) {
        if !is_image(doc, state.input) {
            return super::draw_with(&super::head::HeadView, ui, doc, state);
        }
        let source = &doc.session.meta.model.source;
        ui.strong(format!("{source}: {}", title(doc, state)));
        show_picture(ui, doc, state);
    }

    fn head_figure_size(&self, doc: &Document, state: &ViewState) -> egui::Vec2 {
        if !is_image(doc, state.input) {
            return super::head::HeadView.natural_size(doc, state);
        }
        let picture = doc.session.image_size(state.input).unwrap_or([224, 224]);
        egui::vec2(
            540.0,
            80.0 + 520.0 * picture[1] as f32 / picture[0].max(1) as f32,
        )
    }
}

pub fn title(doc: &Document, state: &ViewState) -> String {
    let query = query_label(doc, state.input, state.image.query);
    match state.image.source {
        PatchSource::Head => format!(
            "layer {} head {}: attention from {query}",
            state.layer, state.head
        ),
        PatchSource::Layer(r) => format!(
            "layer {}, {} over heads: attention from {query}",
            state.layer,
            reduce_label(r)
        ),
        PatchSource::Rollout | PatchSource::Flow => {
            let r = &state.image.rollout;
            let what = if state.image.source == PatchSource::Flow {
                "attention flow"
            } else {
                "attention rollout"
            };
            format!(
                "{what} to {query} ({} fusion, discard {:.0}%, from layer {})",
                fusion_label(r.fusion),
                r.discard_ratio * 100.0,
                r.start_layer
            )
        }
        PatchSource::Relevance => format!(
            "relevance to the target {} (Chefer et al.)",
            target_label(doc, state.input)
        ),
    }
}

/// The gradient run's target as a person reads it: the token or class, and its value.
pub fn target_label(doc: &Document, input: usize) -> String {
    use headwise_engine::model::gradients::TargetKind;
    let info = &doc.session.meta.inputs[input];
    let Some(target) = info.target else {
        return "(none: no gradients)".into();
    };
    match target.kind {
        TargetKind::Token => format!(
            "log p(token {}) = {:.3}",
            info.next_tokens
                .iter()
                .find(|n| n.id as usize == target.id)
                .map_or_else(|| target.id.to_string(), |n| format!("{:?}", n.token)),
            target.value
        ),
        TargetKind::Class => format!(
            "log p({}) = {:.3}",
            info.next_tokens
                .iter()
                .find(|n| n.id as usize == target.id)
                .map_or_else(|| format!("class {}", target.id), |n| n.token.clone()),
            target.value
        ),
        TargetKind::Embedding => format!(
            "pooled output · embedding of {} = {:.3}",
            query_label(doc, input, target.id),
            target.value
        ),
    }
}

fn reduce_label(r: Reduce) -> &'static str {
    match r {
        Reduce::Mean => "mean",
        Reduce::Max => "max",
    }
}

fn fusion_label(f: Fusion) -> &'static str {
    match f {
        Fusion::Mean => "mean",
        Fusion::Min => "min",
        Fusion::Max => "max",
    }
}

fn query_label(doc: &Document, input: usize, token: usize) -> String {
    let info = &doc.session.meta.inputs[input];
    match info.patch_of(token) {
        Some([r, c]) => format!("patch ({r},{c})"),
        None => info
            .tokens
            .get(token)
            .cloned()
            .unwrap_or_else(|| "?".into()),
    }
}

pub fn controls(ui: &mut egui::Ui, doc: &Document, state: &mut ViewState) {
    ui.horizontal_wrapped(|ui| {
        let s = &mut state.image;
        ui.label("over the picture:");
        ui.selectable_value(&mut s.source, PatchSource::Head, "head");
        ui.selectable_value(
            &mut s.source,
            PatchSource::Layer(Reduce::Mean),
            "layer mean",
        );
        ui.selectable_value(&mut s.source, PatchSource::Layer(Reduce::Max), "layer max");
        ui.selectable_value(&mut s.source, PatchSource::Rollout, "rollout");
        ui.selectable_value(&mut s.source, PatchSource::Flow, "flow");
        if doc.session.relevance(state.input).is_some() {
            ui.selectable_value(&mut s.source, PatchSource::Relevance, "relevance")
                .on_hover_text(
                    "Chefer et al.: R ← R + mean over heads of ReLU(∂target/∂A ⊙ A)·R through \
                     the layers, the target's row",
                );
        }
        ui.separator();
        if !matches!(
            s.source,
            PatchSource::Rollout | PatchSource::Flow | PatchSource::Relevance
        ) {
            let head =
                (state.image.source == PatchSource::Head).then_some((&mut state.head, doc.heads()));
            grid::layer_and_head_pickers(ui, &mut state.layer, doc.layers(), head);
        }
    });
    ui.horizontal_wrapped(|ui| {
        let s = &mut state.image;
        ui.add(egui::Slider::new(&mut s.opacity, 0.0..=1.0).text("opacity"));
        ui.checkbox(&mut s.smooth, "smooth");
        for map in crate::render::colormap::ColorMap::CHOICES {
            ui.selectable_value(&mut state.style.colormap, map, map.label());
        }
        if ui.button("query: CLS").clicked() {
            state.image.query = 0;
        }
        ui.checkbox(&mut state.image.mark_outliers, "ring high-norm patches");
        ui.label("grid:");
        ui.selectable_value(
            &mut state.image.grid,
            PatchGrid::Heads,
            "heads of the layer",
        );
        ui.selectable_value(
            &mut state.image.grid,
            PatchGrid::Layers,
            "layers of the head",
        );
    });
    if matches!(state.image.source, PatchSource::Rollout | PatchSource::Flow) {
        ui.horizontal_wrapped(|ui| {
            let r = &mut state.image.rollout;
            ui.label("head fusion:");
            for f in [Fusion::Mean, Fusion::Min, Fusion::Max] {
                ui.selectable_value(&mut r.fusion, f, fusion_label(f));
            }
            ui.add(egui::Slider::new(&mut r.discard_ratio, 0.0..=0.99).text("discard ratio"));
            ui.add(
                egui::DragValue::new(&mut r.start_layer)
                    .range(0..=doc.layers() - 1)
                    .prefix("start layer "),
            );
        });
    }
}

/// Which attention an overlay shows: from which query token, of which head or aggregate.
#[derive(Debug, Clone, Copy)]
pub struct Overlay {
    pub query: usize,
    pub source: PatchSource,
    pub layer: usize,
    pub head: usize,
}

/// The weight of every patch (row-major over the grid) for one query token. Rollouts and flows
/// come from the document's caches, so redrawing costs nothing.
pub fn patch_values(
    ctx: &egui::Context,
    doc: &Document,
    input: usize,
    overlay: Overlay,
    settings: &ImageViewState,
) -> Option<Vec<f32>> {
    let Overlay {
        query,
        source,
        layer,
        head,
    } = overlay;
    let info = &doc.session.meta.inputs[input];
    let [rows, cols] = info.patch_grid?;
    let prefix = info.prefix_tokens.unwrap_or(0);
    let t = info.tokens.len();
    if query >= t {
        return None;
    }
    let row: Vec<f32> = match source {
        PatchSource::Head => doc.row(input, layer, head, query)?,
        PatchSource::Layer(reduce) => {
            let m = doc.reduced(input, Matrix::Layer { layer, reduce })?;
            m[query * t..(query + 1) * t].to_vec()
        }
        PatchSource::Rollout => doc.caches.rollout.row(
            &doc.session,
            doc.analysis_device(),
            input,
            query,
            &settings.rollout,
            &Repaint::new(ctx),
            crate::jobs::inline_work(ctx),
        )?,
        PatchSource::Flow => doc
            .caches
            .flow
            .row(
                &doc.session,
                input,
                query,
                &settings.rollout,
                &Repaint::new(ctx),
            )
            .result?
            .as_ref()
            .clone(),
        PatchSource::Relevance => doc.session.relevance(input)?,
    };
    row.get(prefix..prefix + rows * cols).map(<[f32]>::to_vec)
}

/// The colour-mapped patch weights as a [cols × rows] texture, scaled so the largest is the top
/// colour; alpha carries the opacity.
fn overlay_texture(
    ctx: &egui::Context,
    doc: &Document,
    slot: egui::Id,
    values: &[f32],
    [rows, cols]: [usize; 2],
    state: &ViewState,
) -> egui::TextureHandle {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for v in values {
        v.to_bits().hash(&mut hasher);
    }
    state.image.opacity.to_bits().hash(&mut hasher);
    state.image.smooth.hash(&mut hasher);
    state.style.colormap.index().hash(&mut hasher);
    let key = hasher.finish();
    doc.caches.textures.get(ctx, slot, key, || {
        let max = values.iter().copied().fold(f32::MIN_POSITIVE, f32::max);
        let alpha = (state.image.opacity.clamp(0.0, 1.0) * 255.0).round() as u8;
        let pixels: Vec<egui::Color32> = values
            .iter()
            .map(|v| {
                let [r, g, b] = state.style.colormap.sample(v / max);
                egui::Color32::from_rgba_unmultiplied(r, g, b, alpha)
            })
            .collect();
        let image = egui::ColorImage::new([cols, rows], pixels);
        let options = if state.image.smooth {
            egui::TextureOptions::LINEAR
        } else {
            egui::TextureOptions::NEAREST
        };
        (image, options)
    })
}

/// Where the patch grid lies on a picture drawn in `rect`.
fn grid_rect(info: &InputInfo, picture: [usize; 2], rect: egui::Rect) -> Option<egui::Rect> {
    let ([rows, cols], [ph, pw]) = (info.patch_grid?, info.patch_size?);
    let scale = rect.width() / picture[0] as f32;
    Some(egui::Rect::from_min_size(
        rect.min,
        egui::vec2((cols * pw) as f32 * scale, (rows * ph) as f32 * scale),
    ))
}

/// Draws the picture with an overlay into `rect`; returns the token under the pointer.
#[allow(clippy::too_many_arguments)]
fn draw_overlaid(
    ui: &mut egui::Ui,
    doc: &Document,
    state: &ViewState,
    rect: egui::Rect,
    response: &egui::Response,
    slot: egui::Id,
    values: &[f32],
    mark: Option<usize>,
    outliers: &[usize],
) -> Option<usize> {
    let input = state.input;
    let info = &doc.session.meta.inputs[input];
    let [width, height] = doc.session.image_size(input)?;
    let texture = picture_texture(ui.ctx(), doc, input)?;
    let painter = ui.painter_at(rect);
    let uv = egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
    painter.image(texture.id(), rect, uv, egui::Color32::WHITE);
    let grid = info.patch_grid?;
    let cells = grid_rect(info, [width, height], rect)?;
    // No overlay while one is still being computed (attention flow).
    if values.len() == grid[0] * grid[1] {
        let overlay = overlay_texture(ui.ctx(), doc, slot, values, grid, state);
        painter.image(overlay.id(), cells, uv, egui::Color32::WHITE);
    }
    let scale = rect.width() / width as f32;
    if let (Some(token), Some([ph, pw])) = (mark, info.patch_size)
        && let Some([r, c]) = info.patch_of(token)
    {
        let min = rect.min + egui::vec2((c * pw) as f32, (r * ph) as f32) * scale;
        let patch = egui::Rect::from_min_size(min, egui::vec2(pw as f32, ph as f32) * scale);
        painter.rect_stroke(
            patch,
            0.0,
            egui::Stroke::new(2.0, egui::Color32::from_rgb(255, 80, 80)),
            egui::StrokeKind::Outside,
        );
    }
    if let Some([ph, pw]) = info.patch_size {
        for &token in outliers {
            if let Some([r, c]) = info.patch_of(token) {
                let centre = rect.min
                    + egui::vec2((c as f32 + 0.5) * pw as f32, (r as f32 + 0.5) * ph as f32)
                        * scale;
                painter.circle_stroke(
                    centre,
                    0.6 * pw.max(ph) as f32 * scale,
                    egui::Stroke::new(1.5, egui::Color32::WHITE),
                );
            }
        }
    }
    let pointer = response.hover_pos()?;
    let at = (pointer - rect.min) / scale;
    info.token_at(at.x, at.y)
}

pub fn show(ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState) {
    let Some(hovered) = show_picture(ui, doc, state) else {
        return;
    };
    let input = state.input;
    let Some(size) = doc.session.image_size(input) else {
        return;
    };
    grid_and_table(ui, doc, state, size, hovered);
}

/// The picture with its overlay and caption; handles hover and click. Returns None when there
/// is no picture to show, else the token under the pointer.
pub fn show_picture(
    ui: &mut egui::Ui,
    doc: &Arc<Document>,
    state: &mut ViewState,
) -> Option<Option<usize>> {
    let input = state.input;
    if !is_image(doc, input) {
        ui.label("This input is text: the image view shows pictures given to image models.");
        return None;
    }
    let Some(size) = doc.session.image_size(input) else {
        ui.label("The session holds no picture for this input.");
        return None;
    };
    state.layer = state.layer.min(doc.layers() - 1);
    state.head = state.head.min(doc.heads() - 1);
    let t = doc.tokens(input).len();
    state.image.query = state.image.query.min(t.saturating_sub(1));
    let width = ui.available_width().clamp(160.0, 520.0);
    let (rect, response) = ui.allocate_exact_size(fitted(size, width), egui::Sense::click());
    let values = patch_values(
        ui.ctx(),
        doc,
        input,
        Overlay {
            query: state.image.query,
            source: state.image.source,
            layer: state.layer,
            head: state.head,
        },
        &state.image,
    )
    .unwrap_or_default();
    let hovered = draw_overlaid(
        ui,
        doc,
        state,
        rect,
        &response,
        egui::Id::unique("headwise overlay main"),
        &values,
        Some(state.image.query),
        &outliers_of(doc, input, state.layer, state.image.mark_outliers),
    );
    let info = &doc.session.meta.inputs[input];
    if let Some(token) = hovered {
        let prefix = info.prefix_tokens.unwrap_or(0);
        let value = values.get(token - prefix).copied().unwrap_or(0.0);
        let [r, c] = info.patch_of(token).unwrap_or([0, 0]);
        response.clone().on_hover_text(format!(
            "patch ({r},{c}), token {token}\nweight from {}: {value:.4}",
            query_label(doc, input, state.image.query)
        ));
        if response.clicked() {
            state.image.query = token;
        }
    }
    if state.image.source == PatchSource::Flow && values.is_empty() {
        let flow = doc.caches.flow.row(
            &doc.session,
            input,
            state.image.query,
            &state.image.rollout,
            &Repaint::new(ui.ctx()),
        );
        ui.add(
            egui::ProgressBar::new(flow.fraction)
                .text("computing the attention flow (one maximum flow per token)")
                .animate(true),
        );
    }
    let max = values.iter().copied().fold(0.0f32, f32::max);
    ui.small(format!(
        "colours scaled to the largest patch weight, {max:.4}; click a patch to make it the query"
    ));
    Some(hovered)
}

/// The small overlays (every head of the layer, or every layer of the head) and the artifact
/// table, under the picture.
fn grid_and_table(
    ui: &mut egui::Ui,
    doc: &Arc<Document>,
    state: &mut ViewState,
    size: [usize; 2],
    hovered: Option<usize>,
) {
    let input = state.input;
    // The grid follows the patch under the mouse, else the chosen query.
    let query = hovered.unwrap_or(state.image.query);
    ui.add_space(6.0);
    ui.label(match state.image.grid {
        PatchGrid::Heads => format!(
            "every head of layer {}, from {}",
            state.layer,
            query_label(doc, input, query)
        ),
        PatchGrid::Layers => format!(
            "head {} of every layer, from {}",
            state.head,
            query_label(doc, input, query)
        ),
    });
    let cells: Vec<(usize, usize)> = match state.image.grid {
        PatchGrid::Heads => (0..doc.heads()).map(|h| (state.layer, h)).collect(),
        PatchGrid::Layers => (0..doc.layers()).map(|l| (l, state.head)).collect(),
    };
    let thumb = fitted(size, THUMB);
    let mut open = None;
    let per_row = ((ui.available_width() + 8.0) / (THUMB + 8.0))
        .floor()
        .max(1.0) as usize;
    for (r, chunk) in cells.chunks(per_row).enumerate() {
        ui.horizontal(|ui| {
            for (j, &(layer, head)) in chunk.iter().enumerate() {
                ui.vertical(|ui| {
                    ui.small(format!("L{layer} H{head}"));
                    let (rect, response) = ui.allocate_exact_size(thumb, egui::Sense::click());
                    let values = patch_values(
                        ui.ctx(),
                        doc,
                        input,
                        Overlay {
                            query,
                            source: PatchSource::Head,
                            layer,
                            head,
                        },
                        &state.image,
                    )
                    .unwrap_or_default();
                    draw_overlaid(
                        ui,
                        doc,
                        state,
                        rect,
                        &response,
                        egui::Id::unique(("headwise overlay cell", r * per_row + j)),
                        &values,
                        Some(query),
                        &outliers_of(doc, input, layer, state.image.mark_outliers),
                    );
                    if response.clicked() {
                        open = Some((layer, head));
                    }
                });
            }
        });
    }
    if let Some((layer, head)) = open {
        state.layer = layer;
        state.head = head;
        state.image.source = PatchSource::Head;
    }
    artifact_table(ui, doc, input);
}

fn outliers_of(doc: &Document, input: usize, layer: usize, wanted: bool) -> Vec<usize> {
    if !wanted {
        return Vec::new();
    }
    doc.caches
        .artifacts
        .get(&doc.session, input)
        .get(layer)
        .and_then(|a| a.as_ref().map(|a| a.outliers.clone()))
        .unwrap_or_default()
}

fn artifact_table(ui: &mut egui::Ui, doc: &Document, input: usize) {
    let rows = doc.caches.artifacts.get(&doc.session, input);
    if rows.iter().all(Option::is_none) {
        return;
    }
    ui.add_space(6.0);
    ui.label(egui::RichText::new("artifact tokens").strong());
    ui.small(format!(
        "high-norm patches: hidden-state norm over {OUTLIER_FACTOR}× the layer's median patch norm"
    ));
    egui::Grid::new("headwise artifacts")
        .striped(true)
        .show(ui, |ui| {
            for h in [
                "layer",
                "median norm",
                "max / median",
                "high-norm patches",
                "CLS to top 1%",
                "CLS to high-norm",
            ] {
                ui.small(h);
            }
            ui.end_row();
            let info = &doc.session.meta.inputs[input];
            for (l, row) in rows.iter().enumerate() {
                let Some(a) = row else { continue };
                ui.small(l.to_string());
                ui.small(format!("{:.2}", a.median_norm));
                ui.small(format!(
                    "{:.2}",
                    a.max_norm / a.median_norm.max(f32::MIN_POSITIVE)
                ));
                let patches: Vec<String> = a
                    .outliers
                    .iter()
                    .take(4)
                    .filter_map(|&t| info.patch_of(t).map(|[r, c]| format!("({r},{c})")))
                    .collect();
                let more = a.outliers.len().saturating_sub(4);
                ui.small(match (patches.is_empty(), more) {
                    (true, _) => "none".to_string(),
                    (false, 0) => patches.join(" "),
                    (false, n) => format!("{} +{n}", patches.join(" ")),
                });
                ui.small(format!("{:.1}%", a.top_share * 100.0));
                ui.small(format!("{:.1}%", a.outlier_share * 100.0));
                ui.end_row();
            }
        });
}

/// The canvas an exported image view needs.
pub fn natural_size(doc: &Document, state: &ViewState) -> egui::Vec2 {
    let picture = doc.session.image_size(state.input).unwrap_or([224, 224]);
    let main = fitted(picture, 520.0);
    let cells = match state.image.grid {
        PatchGrid::Heads => doc.heads(),
        PatchGrid::Layers => doc.layers(),
    };
    let per_row = ((560.0 / (THUMB + 8.0)) as usize).max(1);
    let rows = cells.div_ceil(per_row) as f32;
    let thumb = fitted(picture, THUMB);
    let table = if doc.session.token_norms(state.input, 0).is_some() {
        60.0 + doc.layers() as f32 * 20.0
    } else {
        0.0
    };
    egui::vec2(600.0, main.y + rows * (thumb.y + 28.0) + 120.0 + table)
}

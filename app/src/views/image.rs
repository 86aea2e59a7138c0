//! The image view: the picture an image model saw, with a patch heatmap over it (one head's
//! attention from the query token, the mean or max over the layer's heads, or the attention
//! rollout), and under it a grid of small overlays (every head of the layer, or every layer for
//! the head) that follow the patch under the mouse.

use super::state::{ImageViewState, PatchGrid, PatchSource, ViewState};
use crate::document::Document;
use crate::render::heatmap::Matrix;
use eframe::egui;
use headwise_engine::analysis::aggregate::Reduce;
use headwise_engine::analysis::artifacts::{LayerArtifacts, OUTLIER_FACTOR, layer_artifacts};
use headwise_engine::analysis::flow::attention_flow;
use headwise_engine::analysis::rollout::Fusion;
use headwise_engine::analysis::rollout_device::{DeviceLayerMatrices, DeviceLayers};
use headwise_engine::session::{InputInfo, InputKind};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::Mutex;

/// Side of the small overlays, in points.
const THUMB: f32 = 132.0;

/// Is input `input` of the document a picture?
pub fn is_image(doc: &Document, input: usize) -> bool {
    doc.session
        .meta
        .inputs
        .get(input)
        .is_some_and(|i| i.kind == InputKind::Image && i.patch_grid.is_some())
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
        ui.separator();
        if !matches!(s.source, PatchSource::Rollout | PatchSource::Flow) {
            ui.add(
                egui::DragValue::new(&mut state.layer)
                    .range(0..=doc.layers() - 1)
                    .prefix("layer "),
            );
            if state.image.source == PatchSource::Head {
                ui.add(
                    egui::DragValue::new(&mut state.head)
                        .range(0..=doc.heads() - 1)
                        .prefix("head "),
                );
            }
        }
    });
    ui.horizontal_wrapped(|ui| {
        let s = &mut state.image;
        ui.add(egui::Slider::new(&mut s.opacity, 0.0..=1.0).text("opacity"));
        ui.checkbox(&mut s.smooth, "smooth");
        for map in crate::render::colormap::ColorMap::ALL {
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

/// The weight of every patch (row-major over the grid) for one query token. Rollouts are kept
/// in egui's memory until their inputs change, so redrawing costs nothing.
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
        PatchSource::Head => doc.head(input, layer, head)?[query * t..(query + 1) * t].to_vec(),
        PatchSource::Layer(reduce) => {
            let m = doc.reduced(input, Matrix::Layer { layer, reduce })?;
            m[query * t..(query + 1) * t].to_vec()
        }
        PatchSource::Rollout => rollout_row(ctx, doc, input, query, &settings.rollout)?,
        PatchSource::Flow => flow_row(ctx, doc, input, query, settings).result?,
    };
    row.get(prefix..prefix + rows * cols).map(<[f32]>::to_vec)
}

/// Inputs with more tokens than this get their rollout layer matrices built off the UI thread
/// when a slider moves (measured on a 2-core CPU: 26 ms at 257 tokens, 101 ms at 513, 421 ms at
/// 1,025); smaller ones at once.
const ROLLOUT_IN_BACKGROUND_ABOVE: usize = 256;

/// The rollout's layer matrices for one setting, once built; and the attention on the device
/// they were built from, for the next setting of the same input.
#[derive(Default)]
struct RolloutLayers {
    uploaded: Option<Arc<DeviceLayers>>,
    matrices: Option<Arc<DeviceLayerMatrices>>,
}

/// The rollout row of `query` for the rollout settings `r`. The input's attention goes to the
/// compute device once; the layer matrices are rebuilt there when a slider moves (off the UI
/// thread for long inputs, keeping the last row on screen meanwhile), and following the mouse
/// reuses them.
fn rollout_row(
    ctx: &egui::Context,
    doc: &Document,
    input: usize,
    query: usize,
    r: &headwise_engine::analysis::rollout::RolloutSettings,
) -> Option<Vec<f32>> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (doc.generation, input).hash(&mut hasher);
    let this_input = hasher.finish();
    (r.fusion, r.start_layer, r.discard_ratio.to_bits()).hash(&mut hasher);
    let setting = hasher.finish();
    query.hash(&mut hasher);
    let key = hasher.finish();
    let row_slot = egui::Id::unique("headwise rollout row");
    let layers_slot = egui::Id::unique("headwise rollout layers");
    // (input, setting, query) of the row kept, and the row.
    let kept = ctx.data(|d| d.get_temp::<(u64, u64, Arc<Vec<f32>>)>(row_slot));
    if let Some((_, k, row)) = &kept
        && *k == key
    {
        return Some(row.as_ref().clone());
    }
    let job = ctx.data(|d| d.get_temp::<(u64, u64, Arc<Mutex<RolloutLayers>>)>(layers_slot));
    let job = match job {
        Some((_, k, job)) if k == setting => job,
        Some((input_key, _, building))
            if input_key == this_input && building.lock().is_ok_and(|j| j.matrices.is_none()) =>
        {
            // A build for an earlier setting is still running (a slider being dragged): the
            // newest setting starts when it ends, so builds never pile up.
            ctx.request_repaint_after(std::time::Duration::from_millis(30));
            return kept
                .filter(|(input_key, _, _)| *input_key == this_input)
                .map(|(_, _, row)| row.as_ref().clone());
        }
        previous => {
            // The attention already on the device for this input, if the last setting put it
            // there.
            let uploaded = previous
                .filter(|(input_key, _, _)| *input_key == this_input)
                .and_then(|(_, _, job)| job.lock().ok()?.uploaded.clone());
            let job = Arc::new(Mutex::new(RolloutLayers::default()));
            ctx.data_mut(|d| d.insert_temp(layers_slot, (this_input, setting, job.clone())));
            let layers: Vec<_> = doc.session.layers[input]
                .iter()
                .map(|l| l.attn.clone())
                .collect();
            let device = doc.analysis_device().clone();
            let settings = *r;
            let build = {
                let job = job.clone();
                move || {
                    let uploaded = uploaded
                        .unwrap_or_else(|| Arc::new(DeviceLayers::upload(&layers, &device)));
                    let matrices = Arc::new(uploaded.matrices(&settings));
                    if let Ok(mut j) = job.lock() {
                        j.uploaded = Some(uploaded);
                        j.matrices = Some(matrices);
                    }
                }
            };
            if doc.tokens(input).len() > ROLLOUT_IN_BACKGROUND_ABOVE {
                let repaint = ctx.clone();
                std::thread::spawn(move || {
                    build();
                    repaint.request_repaint();
                });
            } else {
                build();
            }
            job
        }
    };
    let matrices = job.lock().ok()?.matrices.clone();
    let Some(matrices) = matrices else {
        // Still building: the last row of this input stays on screen.
        return kept
            .filter(|(input_key, _, _)| *input_key == this_input)
            .map(|(_, _, row)| row.as_ref().clone());
    };
    let row = Arc::new(matrices.row(query).ok()?);
    ctx.data_mut(|d| d.insert_temp(row_slot, (this_input, key, row.clone())));
    Some(row.as_ref().clone())
}

/// An attention flow being computed off the UI thread, or its result.
#[derive(Debug, Clone, Default)]
pub struct FlowJob {
    pub fraction: f32,
    pub result: Option<Vec<f32>>,
}

/// The attention flow from `query` for the current settings: started in the background on
/// first request, then polled each frame until it is done.
pub fn flow_row(
    ctx: &egui::Context,
    doc: &Document,
    input: usize,
    query: usize,
    settings: &ImageViewState,
) -> FlowJob {
    let r = settings.rollout;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (doc.generation, input, query, r.fusion, r.start_layer).hash(&mut hasher);
    r.discard_ratio.to_bits().hash(&mut hasher);
    let key = hasher.finish();
    let slot = egui::Id::unique("headwise flow");
    if let Some((k, job)) = ctx.data(|d| d.get_temp::<(u64, Arc<Mutex<FlowJob>>)>(slot))
        && k == key
    {
        return job.lock().map(|j| j.clone()).unwrap_or_default();
    }
    let job = Arc::new(Mutex::new(FlowJob::default()));
    ctx.data_mut(|d| d.insert_temp(slot, (key, job.clone())));
    let layers: Vec<_> = doc.session.layers[input]
        .iter()
        .map(|l| l.attn.clone())
        .collect();
    let repaint = ctx.clone();
    std::thread::spawn(move || {
        let progress = |fraction: f32| {
            if let Ok(mut j) = job.lock() {
                j.fraction = fraction;
            }
            repaint.request_repaint();
        };
        let flow = attention_flow(&layers, &r, query, &progress);
        if let Ok(mut j) = job.lock() {
            j.result = Some(flow);
        }
        repaint.request_repaint();
    });
    FlowJob::default()
}

/// A texture kept in egui's memory under `slot`, rebuilt only when `key` changes.
fn cached_texture(
    ctx: &egui::Context,
    slot: egui::Id,
    key: u64,
    make: impl FnOnce() -> (egui::ColorImage, egui::TextureOptions),
) -> egui::TextureHandle {
    if let Some((k, handle)) = ctx.data(|d| d.get_temp::<(u64, egui::TextureHandle)>(slot))
        && k == key
    {
        return handle;
    }
    let (image, options) = make();
    let handle = ctx.load_texture(format!("{slot:?}"), image, options);
    ctx.data_mut(|d| d.insert_temp(slot, (key, handle.clone())));
    handle
}

/// The picture of an image input as a texture, uploaded once per document.
pub fn picture_texture(
    ctx: &egui::Context,
    doc: &Document,
    input: usize,
) -> Option<egui::TextureHandle> {
    let size = doc.session.image_size(input)?;
    let slot = egui::Id::unique(("headwise picture", input));
    Some(cached_texture(ctx, slot, doc.generation, || {
        let pixels = doc
            .session
            .image(input)
            .map(|p| p.pixels)
            .unwrap_or_default();
        (
            egui::ColorImage::from_rgb(size, &pixels),
            egui::TextureOptions::LINEAR,
        )
    }))
}

/// The colour-mapped patch weights as a [cols × rows] texture, scaled so the largest is the top
/// colour; alpha carries the opacity.
fn overlay_texture(
    ctx: &egui::Context,
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
    cached_texture(ctx, slot, key, || {
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

/// The part of the picture (in texture coordinates) that a patch token covers.
pub fn patch_uv(doc: &Document, input: usize, token: usize) -> Option<egui::Rect> {
    let info = &doc.session.meta.inputs[input];
    let [r, c] = info.patch_of(token)?;
    let [ph, pw] = info.patch_size?;
    let [width, height] = doc.session.image_size(input)?;
    let (w, h) = (width as f32, height as f32);
    Some(egui::Rect::from_min_max(
        egui::pos2((c * pw) as f32 / w, (r * ph) as f32 / h),
        egui::pos2(((c + 1) * pw) as f32 / w, ((r + 1) * ph) as f32 / h),
    ))
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
        let overlay = overlay_texture(ui.ctx(), slot, values, grid, state);
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

/// The picture's size in points when it is drawn `width` points wide.
fn fitted(picture: [usize; 2], width: f32) -> egui::Vec2 {
    egui::vec2(width, width * picture[1] as f32 / picture[0].max(1) as f32)
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
        &outliers_of(ui, doc, input, state.layer, state.image.mark_outliers),
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
        let job = flow_row(ui.ctx(), doc, input, state.image.query, &state.image);
        ui.add(
            egui::ProgressBar::new(job.fraction)
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
                        &outliers_of(ui, doc, input, layer, state.image.mark_outliers),
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

/// Each layer's patch norms and where the CLS token's attention goes, for image inputs whose
/// session has the norms: worked out once per document and input, kept in egui's memory.
pub fn artifacts(
    ctx: &egui::Context,
    doc: &Document,
    input: usize,
) -> Arc<Vec<Option<LayerArtifacts>>> {
    let slot = egui::Id::unique(("headwise artifacts", input));
    if let Some((generation, rows)) =
        ctx.data(|d| d.get_temp::<(u64, Arc<Vec<Option<LayerArtifacts>>>)>(slot))
        && generation == doc.generation
    {
        return rows;
    }
    let prefix = doc.session.meta.inputs[input].prefix_tokens.unwrap_or(0);
    let rows: Arc<Vec<_>> = Arc::new(
        (0..doc.layers())
            .map(|l| {
                let norms = doc.session.token_norms(input, l)?;
                Some(layer_artifacts(
                    &norms,
                    &doc.session.layers[input][l].attn,
                    prefix,
                ))
            })
            .collect(),
    );
    ctx.data_mut(|d| d.insert_temp(slot, (doc.generation, rows.clone())));
    rows
}

fn outliers_of(
    ui: &egui::Ui,
    doc: &Document,
    input: usize,
    layer: usize,
    wanted: bool,
) -> Vec<usize> {
    if !wanted {
        return Vec::new();
    }
    artifacts(ui.ctx(), doc, input)
        .get(layer)
        .and_then(|a| a.as_ref().map(|a| a.outliers.clone()))
        .unwrap_or_default()
}

fn artifact_table(ui: &mut egui::Ui, doc: &Document, input: usize) {
    let rows = artifacts(ui.ctx(), doc, input);
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

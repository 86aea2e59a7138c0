//! What every view that shows an image input's picture shares: whether an input is a picture,
//! the picture as a texture, and which part of it a patch token covers.

use crate::caches::hash_of;
use crate::document::Document;
use eframe::egui;
use headwise_engine::session::InputKind;

/// Is input `input` of the document a picture?
pub fn is_image(doc: &Document, input: usize) -> bool {
    doc.session
        .meta
        .inputs
        .get(input)
        .is_some_and(|i| i.kind == InputKind::Image && i.patch_grid.is_some())
}

/// Whether any input of the document is a picture.
pub fn has_pictures(doc: &Document) -> bool {
    (0..doc.inputs()).any(|i| is_image(doc, i))
}

/// The picture of an image input as a texture, uploaded once per document and egui context.
pub fn picture_texture(
    ctx: &egui::Context,
    doc: &Document,
    input: usize,
) -> Option<egui::TextureHandle> {
    let size = doc.session.image_size(input)?;
    let slot = egui::Id::unique(("headwise picture", input));
    // A picture wider or taller than the GPU's largest texture is sampled down to fit: wgpu
    // refuses such a texture by poisoning the device. It is drawn over the same rectangle.
    let max_side = ctx.input(|i| i.max_texture_side).max(1);
    Some(
        doc.caches
            .textures
            .get(ctx, slot, hash_of(doc.generation), || {
                let pixels = doc
                    .session
                    .image(input)
                    .map(|p| p.pixels)
                    .unwrap_or_default();
                let (size, pixels) = fit_texture(size, pixels, max_side);
                (
                    egui::ColorImage::from_rgb(size, &pixels),
                    egui::TextureOptions::LINEAR,
                )
            }),
    )
}

/// RGB pixels of `[width, height]`, sampled down (nearest pixel) so that neither side exceeds
/// `max_side`; unchanged when they already fit.
fn fit_texture(
    [width, height]: [usize; 2],
    pixels: Vec<u8>,
    max_side: usize,
) -> ([usize; 2], Vec<u8>) {
    if width <= max_side && height <= max_side {
        return ([width, height], pixels);
    }
    let scale = max_side as f64 / width.max(height) as f64;
    let (w, h) = (
        ((width as f64 * scale) as usize).clamp(1, max_side),
        ((height as f64 * scale) as usize).clamp(1, max_side),
    );
    let mut out = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        let sy = y * height / h;
        for x in 0..w {
            let sx = x * width / w;
            let at = (sy * width + sx) * 3;
            out.extend_from_slice(pixels.get(at..at + 3).unwrap_or(&[0, 0, 0]));
        }
    }
    ([w, h], out)
}

/// The part of the picture (in texture coordinates) that a patch token covers.
pub fn patch_uv(doc: &Document, input: usize, token: usize) -> Option<egui::Rect> {
    let info = doc.session.meta.inputs.get(input)?;
    let [r, c] = info.patch_of(token)?;
    let [ph, pw] = info.patch_size?;
    let [width, height] = doc.session.image_size(input)?;
    let (w, h) = (width as f32, height as f32);
    Some(egui::Rect::from_min_max(
        egui::pos2((c * pw) as f32 / w, (r * ph) as f32 / h),
        egui::pos2(((c + 1) * pw) as f32 / w, ((r + 1) * ph) as f32 / h),
    ))
}

/// The picture's size in points when it is drawn `width` points wide.
pub fn fitted(picture: [usize; 2], width: f32) -> egui::Vec2 {
    egui::vec2(width, width * picture[1] as f32 / picture[0].max(1) as f32)
}

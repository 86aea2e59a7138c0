//! How the query-key view colours and sizes its points (queries and keys, position, input,
//! norm, a searched token) and the legend that explains it.

use super::legend;
use super::state::{ColourBy, ViewState};
use crate::document::Document;
use crate::render::colormap::ColorMap;
use crate::render::scatter::PointStyle;
use eframe::egui;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// AttentionViz's colours: queries green, keys pink.
pub const QUERY: [u8; 3] = [95, 185, 108];
pub const KEY: [u8; 3] = [227, 119, 194];
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

/// A token as a search sees it: lower case, without the tokenizer's word markers.
pub(crate) fn normalise_token(token: &str) -> String {
    token
        .trim()
        .trim_start_matches("##")
        .trim_start_matches('Ġ')
        .trim_start_matches('▁')
        .to_lowercase()
}

/// The colours and sizes of one head's 2N points for the view's settings, from the document's
/// cache until they change.
pub fn point_style(
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
    let slot = (per_head.then_some((layer, head)), highlight);
    doc.caches.point_styles.get(slot, key, || {
        make_style(doc, state, layer, head, highlight, key)
    })
}

/// Colours and sizes for [`point_style`], worked out.
fn make_style(
    doc: &Document,
    state: &ViewState,
    layer: usize,
    head: usize,
    highlight: bool,
    key: u64,
) -> PointStyle {
    let qk = &state.qk;
    let index = doc.caches.corpus_index.get(&doc.session);
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
    PointStyle {
        key,
        colours: Arc::new(colours),
        sizes: Arc::new(sizes),
    }
}

pub fn colour_legend(ui: &mut egui::Ui, doc: &Document, state: &ViewState) {
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

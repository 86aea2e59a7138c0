//! Pictures and patch overlays uploaded as egui textures, rebuilt only when what they show
//! changes. A texture belongs to one egui context (the window's, or an offscreen renderer's),
//! so each context has textures of its own; only the few most recently used contexts keep
//! theirs.

use super::lock;
use eframe::egui;
use std::collections::HashMap;
use std::sync::Mutex;

/// Contexts whose textures are kept (the window, an export under way, and one more).
const CONTEXTS: usize = 3;

type Textures = HashMap<egui::Id, (u64, egui::TextureHandle)>;

#[derive(Default)]
pub struct TextureCache {
    /// By context, most recently used last.
    by_context: Mutex<Vec<(egui::Context, Textures)>>,
}

impl TextureCache {
    /// The texture in `slot` if it was made for `key`, else the one `make` describes, uploaded
    /// now.
    pub fn get(
        &self,
        ctx: &egui::Context,
        slot: egui::Id,
        key: u64,
        make: impl FnOnce() -> (egui::ColorImage, egui::TextureOptions),
    ) -> egui::TextureHandle {
        let mut contexts = lock(&self.by_context);
        let at = match contexts.iter().position(|(c, _)| c == ctx) {
            Some(at) => at,
            None => {
                if contexts.len() == CONTEXTS {
                    contexts.remove(0);
                }
                contexts.push((ctx.clone(), HashMap::new()));
                contexts.len() - 1
            }
        };
        let entry = contexts.remove(at);
        contexts.push(entry);
        let textures = &mut contexts.last_mut().expect("just pushed").1;
        if let Some((k, handle)) = textures.get(&slot)
            && *k == key
        {
            return handle.clone();
        }
        let (image, options) = make();
        let handle = ctx.load_texture(format!("{slot:?}"), image, options);
        textures.insert(slot, (key, handle.clone()));
        handle
    }
}

//! The colours and sizes of the query-key view's points (8 bytes a point), kept per head, or
//! once for all heads when no setting depends on the head, until the settings change.

use super::lock;
use crate::render::scatter::PointStyle;
use std::collections::HashMap;
use std::sync::Mutex;

/// Which style: a head (None: the one style every head shares) and whether it is the single
/// view's highlighted style.
pub type StyleSlot = (Option<(usize, usize)>, bool);

#[derive(Default)]
pub struct PointStyleCache {
    styles: Mutex<HashMap<StyleSlot, PointStyle>>,
}

impl PointStyleCache {
    /// The style in `slot` if it was made for settings `key`, else one `make` makes now.
    pub fn get(&self, slot: StyleSlot, key: u64, make: impl FnOnce() -> PointStyle) -> PointStyle {
        if let Some(style) = lock(&self.styles).get(&slot)
            && style.key == key
        {
            return style.clone();
        }
        let style = make();
        lock(&self.styles).insert(slot, style.clone());
        style
    }
}

//! Where every point of the query-key view's single head lies on screen, kept while the
//! layout, camera and rectangle stay the same: moving the mouse over a million still points
//! then costs one nearest-point search.

use super::{bits, hash_of, lock};
use crate::projections::Layout;
use crate::views::camera::apply;
use eframe::egui;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct ScreenPositionsCache {
    kept: Mutex<Option<(u64, Arc<Vec<egui::Pos2>>)>>,
}

impl ScreenPositionsCache {
    /// Screen positions (points) of every point under a camera matrix, NaN behind the eye.
    pub fn get(
        &self,
        layout: &Layout,
        transform: &[[f32; 4]; 4],
        rect: egui::Rect,
    ) -> Arc<Vec<egui::Pos2>> {
        let corners = [rect.min.x, rect.min.y, rect.max.x, rect.max.y];
        let key = hash_of((
            layout.version,
            bits(transform.as_flattened()),
            bits(&corners),
        ));
        let mut kept = lock(&self.kept);
        if let Some((k, positions)) = kept.as_ref()
            && *k == key
        {
            return positions.clone();
        }
        let positions = Arc::new(screen_positions(layout, transform, rect));
        *kept = Some((key, positions.clone()));
        positions
    }
}

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

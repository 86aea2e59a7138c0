//! A colour legend: the colour map as a bar with its two end values.

use crate::render::colormap::ColorMap;
use eframe::egui;

/// Draws a horizontal legend from `low` to `high` labelled with `title`.
pub fn show(ui: &mut egui::Ui, map: ColorMap, title: &str, low: &str, high: &str) {
    ui.horizontal(|ui| {
        ui.label(title);
        ui.label(low);
        let (rect, _) = ui.allocate_exact_size(egui::vec2(160.0, 14.0), egui::Sense::hover());
        let steps = 64;
        let mut mesh = egui::Mesh::default();
        for i in 0..=steps {
            let t = i as f32 / steps as f32;
            let [r, g, b] = map.sample(t);
            let colour = egui::Color32::from_rgb(r, g, b);
            let x = rect.left() + t * rect.width();
            mesh.colored_vertex(egui::pos2(x, rect.top()), colour);
            mesh.colored_vertex(egui::pos2(x, rect.bottom()), colour);
            if i > 0 {
                let base = (2 * i) as u32;
                mesh.add_triangle(base - 2, base - 1, base);
                mesh.add_triangle(base - 1, base, base + 1);
            }
        }
        ui.painter().add(egui::Shape::mesh(mesh));
        ui.label(high);
    });
}

/// The colour of `t` in [0, 1] as an egui colour.
pub fn colour(map: ColorMap, t: f32) -> egui::Color32 {
    let [r, g, b] = map.sample(t);
    egui::Color32::from_rgb(r, g, b)
}

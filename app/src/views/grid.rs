//! The layer × head grid that the head overview and the query-key matrix view share: the cell
//! size that fits the space at hand, where each cell lies, and the layer and head labels.

use eframe::egui;

const LABEL_WIDTH: f32 = 34.0;
const HEADER_HEIGHT: f32 = 18.0;
const GAP: f32 = 3.0;

/// The largest cell that fits `available`, kept within `min..=max`.
pub fn cell_size(available: egui::Vec2, layers: usize, heads: usize, min: f32, max: f32) -> f32 {
    let w = (available.x - LABEL_WIDTH) / heads.max(1) as f32 - GAP;
    let h = (available.y - HEADER_HEIGHT) / layers.max(1) as f32 - GAP;
    w.min(h).clamp(min, max)
}

/// The size the whole grid takes at a cell size.
pub fn grid_size(cell: f32, layers: usize, heads: usize) -> egui::Vec2 {
    egui::vec2(
        LABEL_WIDTH + heads as f32 * (cell + GAP),
        HEADER_HEIGHT + layers as f32 * (cell + GAP),
    )
}

/// The cell of `row` and `column` in a grid drawn at `grid`.
pub fn cell_rect(grid: egui::Rect, cell: f32, row: usize, column: usize) -> egui::Rect {
    let min = egui::pos2(
        grid.left() + LABEL_WIDTH + column as f32 * (cell + GAP),
        grid.top() + HEADER_HEIGHT + row as f32 * (cell + GAP),
    );
    egui::Rect::from_min_size(min, egui::vec2(cell, cell))
}

/// A label over each column and `L{row}` beside each row.
pub fn labels(
    ui: &egui::Ui,
    painter: &egui::Painter,
    grid: egui::Rect,
    cell: f32,
    layers: usize,
    columns: impl Iterator<Item = String>,
) {
    let text = ui.visuals().text_color();
    let font = egui::FontId::proportional(11.0);
    for (column, label) in columns.enumerate() {
        let top = cell_rect(grid, cell, 0, column).center_top();
        painter.text(
            egui::pos2(top.x, grid.top() + 2.0),
            egui::Align2::CENTER_TOP,
            label,
            font.clone(),
            text,
        );
    }
    for layer in 0..layers {
        let y = cell_rect(grid, cell, layer, 0).center().y;
        painter.text(
            egui::pos2(grid.left() + 2.0, y),
            egui::Align2::LEFT_CENTER,
            format!("L{layer}"),
            font.clone(),
            text,
        );
    }
}

/// Column labels for a grid whose columns are the heads in order: H0, H1, ...
pub fn head_labels(heads: usize) -> impl Iterator<Item = String> {
    (0..heads).map(|h| format!("H{h}"))
}

/// Drag values picking a layer (of `layers`) and, where `head` is given, a head (of `heads`).
pub fn layer_and_head_pickers(
    ui: &mut egui::Ui,
    layer: &mut usize,
    layers: usize,
    head: Option<(&mut usize, usize)>,
) {
    ui.add(
        egui::DragValue::new(layer)
            .range(0..=layers.saturating_sub(1))
            .prefix("layer "),
    );
    if let Some((head, heads)) = head {
        ui.add(
            egui::DragValue::new(head)
                .range(0..=heads.saturating_sub(1))
                .prefix("head "),
        );
    }
}

/// The ring around the selected head's cell.
pub fn mark_selected(ui: &egui::Ui, painter: &egui::Painter, cell: egui::Rect) {
    painter.rect_stroke(
        cell.expand(1.5),
        0.0,
        egui::Stroke::new(2.0, ui.visuals().selection.stroke.color),
        egui::StrokeKind::Outside,
    );
}

//! Exporting pictures: the current view at twice the screen's resolution, and every head's
//! heatmap of a layer or of the whole model into a folder, drawn offscreen by the same view code
//! as the window, on a thread of its own so the window keeps responding.

use crate::document::Document;
use crate::render::offscreen::Offscreen;
use crate::views::image as image_view;
use crate::views::state::{PatchSource, Selection, Tab, ViewState};
use crate::views::{grid, head, overview, qk};
use anyhow::{Context, Result};
use eframe::egui;
use headwise_engine::atomic_file::write_atomically;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, channel};

/// Lays out the view `state` names (overview or head view, with its controls' titles) and
/// renders it.
pub fn render_view(
    offscreen: &mut Offscreen,
    doc: &Arc<Document>,
    state: &mut ViewState,
    size: egui::Vec2,
    pixels_per_point: f32,
) -> Result<image::RgbaImage> {
    // A picture is drawn once: it waits for the metrics the window would fill in later.
    doc.wait_for_metrics();
    offscreen.render(size, pixels_per_point, |ui| draw_view(ui, doc, state))
}

/// The body of a view without its interactive controls: what a figure shows.
pub fn draw_view(ui: &mut egui::Ui, doc: &Arc<Document>, state: &mut ViewState) {
    let source = &doc.session.meta.model.source;
    match state.tab {
        Tab::Overview => {
            ui.strong(format!("{source}: every head, input {}", state.input));
            overview::show(ui, doc, state);
        }
        Tab::Head => {
            ui.strong(format!("{source}: {}", head::title(state)));
            head::show(ui, doc, state);
        }
        Tab::Image => {
            ui.strong(format!("{source}: {}", image_view::title(doc, state)));
            image_view::show(ui, doc, state);
        }
        Tab::Qk => {
            ui.strong(format!("{source}: {}", qk::title(doc, state)));
            qk::show(ui, doc, state);
        }
    }
}

/// The canvas size that fits a view of `doc` without scrolling.
pub fn natural_size(doc: &Document, state: &ViewState) -> egui::Vec2 {
    match state.tab {
        Tab::Overview => {
            let cell = if doc.layers() * doc.heads() > 150 {
                40.0
            } else {
                64.0
            };
            grid::grid_size(cell, doc.layers(), doc.heads()) + egui::vec2(40.0, 80.0)
        }
        Tab::Head => egui::vec2(900.0, 940.0),
        Tab::Image => image_view::natural_size(doc, state),
        Tab::Qk if state.qk.single => egui::vec2(900.0, 900.0),
        Tab::Qk => grid::grid_size(90.0, doc.layers(), doc.heads()) + egui::vec2(40.0, 80.0),
    }
}

pub fn view_file_name(state: &ViewState) -> String {
    match state.tab {
        Tab::Overview => "overview.png".to_string(),
        Tab::Head => format!("head-L{}-H{}.png", state.layer, state.head),
        Tab::Image => format!("image-L{}-H{}.png", state.layer, state.head),
        Tab::Qk if state.qk.single => format!(
            "qk-{}-L{}-H{}.png",
            state.qk.method.name(),
            state.layer,
            state.head
        ),
        Tab::Qk => format!("qk-{}.png", state.qk.method.name()),
    }
}

/// Writes a PNG atomically (temporary file, then rename).
pub fn save_png(image: &image::RgbaImage, path: &Path) -> Result<()> {
    write_atomically(
        path,
        |tmp| Ok(image.save_with_format(tmp, image::ImageFormat::Png)?),
        anyhow::Error::from,
    )
    .with_context(|| format!("writing {}", path.display()))
}

/// Every head of some layers, one PNG each, rendered in the background.
pub struct ExportJob {
    done: Arc<AtomicUsize>,
    total: usize,
    result: Receiver<Result<String>>,
}

impl ExportJob {
    pub fn start(
        mut offscreen: Offscreen,
        doc: Arc<Document>,
        view: ViewState,
        layers: Vec<usize>,
        dir: PathBuf,
    ) -> Self {
        let done = Arc::new(AtomicUsize::new(0));
        let total = layers.len() * doc.heads();
        let (send, result) = channel();
        let counter = done.clone();
        std::thread::spawn(move || {
            let outcome = (|| -> Result<String> {
                // From the image view, each head's overlay on the picture; else its heatmap.
                let overlays = view.tab == Tab::Image && image_view::is_image(&doc, view.input);
                for &layer in &layers {
                    for h in 0..doc.heads() {
                        let mut state = ViewState {
                            tab: if overlays { Tab::Image } else { Tab::Head },
                            layer,
                            head: h,
                            selection: Selection::Head,
                            window: None,
                            ..view.clone()
                        };
                        state.image.source = PatchSource::Head;
                        let image = if overlays {
                            let source = doc.session.meta.model.source.clone();
                            let picture = doc.session.image_size(view.input).unwrap_or([224, 224]);
                            let size = egui::vec2(
                                540.0,
                                80.0 + 520.0 * picture[1] as f32 / picture[0].max(1) as f32,
                            );
                            offscreen.render(size, 1.0, |ui| {
                                ui.strong(format!("{source}: {}", image_view::title(&doc, &state)));
                                image_view::show_picture(ui, &doc, &mut state);
                            })?
                        } else {
                            let size = natural_size(&doc, &state);
                            render_view(&mut offscreen, &doc, &mut state, size, 1.0)?
                        };
                        save_png(&image, &dir.join(format!("L{layer:02}_H{h:02}.png")))?;
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(format!("exported {total} heads to {}", dir.display()))
            })();
            let _ = send.send(outcome);
        });
        Self {
            done,
            total,
            result,
        }
    }

    pub fn fraction(&self) -> f32 {
        self.done.load(Ordering::Relaxed) as f32 / self.total.max(1) as f32
    }

    /// The outcome once the job has finished.
    pub fn poll(&mut self) -> Option<Result<String>> {
        self.result.try_recv().ok()
    }
}

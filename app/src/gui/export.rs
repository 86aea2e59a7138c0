//! Exporting pictures from the window: the current view at twice the screen's resolution, and
//! every head of a layer or of the whole model into a folder, one PNG each, in a job so the
//! window keeps responding. Both draw offscreen with the same view code as the window.

use super::app::HeadwiseApp;
use crate::document::Document;
use crate::jobs::{Job, Repaint};
use crate::render::offscreen::Offscreen;
use crate::render::png::save_png;
use crate::views::state::{PatchSource, Selection, ViewState};
use crate::views::{self, view};
use anyhow::Result;
use eframe::egui;
use eframe::egui_wgpu::wgpu;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Every head of some layers, one PNG each, rendered in a job.
pub struct ExportJob {
    job: Job<Result<String>>,
}

impl ExportJob {
    pub fn start(
        offscreen: Offscreen,
        doc: Arc<Document>,
        state: ViewState,
        layers: Vec<usize>,
        dir: PathBuf,
        repaint: Repaint,
    ) -> Self {
        let job = Job::spawn("export", repaint, move |cx| {
            let mut offscreen = offscreen;
            let total = layers.len() * doc.heads();
            // The view exported from says how each head looks (the image view: its overlay on
            // the picture; else the head's heatmap).
            let from = view(state.tab);
            if from.shows_metrics() {
                doc.wait_for_metrics();
            }
            for (i, &layer) in layers.iter().enumerate() {
                for h in 0..doc.heads() {
                    if cx.cancelled() {
                        anyhow::bail!("export cancelled");
                    }
                    let mut head = ViewState {
                        layer,
                        head: h,
                        selection: Selection::Head,
                        window: None,
                        ..state.clone()
                    };
                    head.image.source = PatchSource::Head;
                    let size = from.head_figure_size(&doc, &head);
                    let image = offscreen.render(size, 1.0, |ui| {
                        from.head_figure(ui, &doc, &mut head);
                    })?;
                    save_png(&image, &dir.join(format!("L{layer:02}_H{h:02}.png")))?;
                    let done = i * doc.heads() + h + 1;
                    cx.progress("exporting", Some(done as f32 / total.max(1) as f32));
                }
            }
            Ok(format!("exported {total} heads to {}", dir.display()))
        });
        Self { job }
    }

    pub fn fraction(&self) -> f32 {
        self.job.progress().fraction.unwrap_or(0.0)
    }

    /// The outcome once the job has finished.
    pub fn poll(&mut self) -> Option<Result<String>> {
        self.job.poll()
    }
}

pub(super) struct Exports {
    /// The window's wgpu device, which offscreen pictures are drawn with.
    render_device: Option<(wgpu::Device, wgpu::Queue)>,
    pub job: Option<ExportJob>,
}

impl Exports {
    pub fn new(render_device: Option<(wgpu::Device, wgpu::Queue)>) -> Self {
        Self {
            render_device,
            job: None,
        }
    }

    fn offscreen(&self, ctx: &egui::Context) -> Option<Offscreen> {
        let (device, queue) = self.render_device.clone()?;
        Some(Offscreen::new(
            device,
            queue,
            ctx.global_style().visuals.clone(),
        ))
    }
}

impl HeadwiseApp {
    /// The current view as a PNG at twice the screen's resolution.
    pub(super) fn export_view_dialog(&mut self, ctx: &egui::Context) {
        let (Some(doc), Some(mut offscreen)) = (self.doc.clone(), self.exports.offscreen(ctx))
        else {
            return;
        };
        let Some(path) = rfd::FileDialog::new()
            .add_filter("PNG", &["png"])
            .set_file_name(view(self.view.tab).file_name(&self.view))
            .save_file()
        else {
            return;
        };
        let size = ctx.content_rect().size();
        let ppp = ctx.pixels_per_point() * 2.0;
        let mut state = self.view.clone();
        match views::render(&mut offscreen, &doc, &mut state, size, ppp)
            .and_then(|img| save_png(&img, &path))
        {
            Ok(()) => self.messages.info = format!("exported {}", path.display()),
            Err(e) => self.messages.error = Some(format!("export failed: {e:#}")),
        }
    }

    /// Every head of this layer (or of the model) into a folder.
    pub(super) fn export_heads_dialog(&mut self, ctx: &egui::Context, whole_model: bool) {
        let (Some(doc), Some(offscreen)) = (self.doc.clone(), self.exports.offscreen(ctx)) else {
            return;
        };
        if let Some(dir) = rfd::FileDialog::new().pick_folder() {
            let layers = if whole_model {
                (0..doc.layers()).collect()
            } else {
                vec![self.view.layer]
            };
            self.exports.job = Some(ExportJob::start(
                offscreen,
                doc,
                self.view.clone(),
                layers,
                dir,
                self.repaint.clone(),
            ));
        }
    }

    /// Each frame: the export under way, if any.
    pub(super) fn poll_exports(&mut self, ctx: &egui::Context) {
        let Some(job) = &mut self.exports.job else {
            return;
        };
        match job.poll() {
            Some(Ok(message)) => self.messages.info = message,
            Some(Err(e)) => self.messages.error = Some(format!("export failed: {e:#}")),
            None => {
                ctx.request_repaint_after(Duration::from_millis(100));
                return;
            }
        }
        self.exports.job = None;
    }
}

//! Pictures of the whole window: asked of eframe, saved when they arrive a frame or two later.
//! `--screenshot PATH` takes one once the first document is on screen and quits (the window
//! tests and the README's pictures); Ctrl+Shift+E takes one into a chosen file.

use super::app::HeadwiseApp;
use crate::render::png::save_png;
use eframe::egui;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

/// A picture of the window, asked of eframe and saved when it arrives.
#[derive(Clone)]
struct Request {
    path: PathBuf,
    /// Quit once it is saved (the `--screenshot` start option).
    quit_after: bool,
    requested: bool,
}

pub(super) struct Screenshots {
    request: Option<Request>,
    send: Sender<Arc<egui::ColorImage>>,
    arrived: Receiver<Arc<egui::ColorImage>>,
    /// Frames drawn so far, and since when: the start-up picture waits for the layout to settle.
    frames: u32,
    started: Instant,
}

impl Screenshots {
    pub fn new(at_start: Option<PathBuf>) -> Self {
        let (send, arrived) = channel();
        Self {
            request: at_start.map(|path| Request {
                path,
                quit_after: true,
                requested: false,
            }),
            send,
            arrived,
            frames: 0,
            started: Instant::now(),
        }
    }

    /// Asks eframe for a picture of the window; it arrives in a later frame.
    fn ask(&self, ctx: &egui::Context) {
        let send = self.send.clone();
        let repaint = ctx.clone();
        ctx.send_viewport_cmd(egui::ViewportCommand::Screenshot(
            egui::ScreenshotCallback::new(move |image| {
                let _ = send.send(image);
                repaint.request_repaint();
            }),
        ));
    }
}

impl HeadwiseApp {
    pub(super) fn export_window_dialog(&mut self, ctx: &egui::Context) {
        if let Some(path) = rfd::FileDialog::new()
            .add_filter("PNG", &["png"])
            .set_file_name("headwise-window.png")
            .save_file()
        {
            self.screenshots.request = Some(Request {
                path,
                quit_after: false,
                requested: true,
            });
            self.screenshots.ask(ctx);
        }
    }

    /// Saves a picture that has arrived.
    pub(super) fn take_screenshots(&mut self, ctx: &egui::Context) {
        let shots: Vec<Arc<egui::ColorImage>> = self.screenshots.arrived.try_iter().collect();
        let (Some(image), Some(request)) = (shots.last(), self.screenshots.request.clone()) else {
            return;
        };
        let rgba = image::RgbaImage::from_raw(
            image.width() as u32,
            image.height() as u32,
            image.as_raw().to_vec(),
        );
        let saved = rgba
            .ok_or_else(|| anyhow::anyhow!("screenshot has the wrong size"))
            .and_then(|img| save_png(&img, &request.path));
        match saved {
            Ok(()) => {
                self.messages.info = format!("saved {}", request.path.display());
                eprintln!("screenshot: {}", request.path.display());
            }
            Err(e) => {
                self.messages.error = Some(format!("screenshot failed: {e:#}"));
                eprintln!("error: screenshot failed: {e:#}");
            }
        }
        self.screenshots.request = None;
        if request.quit_after {
            self.quit(ctx);
        }
    }

    /// Whether what a long input's views compute in the background is done: the head view's
    /// region, and the head metrics (with the overview's thumbnails).
    fn regions_ready(&self) -> bool {
        self.doc
            .as_ref()
            .is_none_or(|doc| !doc.caches.regions.busy() && doc.metrics().is_some())
    }

    /// The start-up picture, once the window shows what it was started with.
    pub(super) fn screenshot_when_ready(&mut self, ctx: &egui::Context) {
        // A few frames let the layout settle and the GPU uploads finish before the picture.
        self.screenshots.frames += 1;
        let frames = self.screenshots.frames;
        let due = self
            .screenshots
            .request
            .as_ref()
            .is_some_and(|r| !r.requested && frames >= 5)
            // Wait for a model that is loading, a run under way or the query-key layouts, but
            // not forever.
            && ((self.runs.busy().is_none()
                && self.runs.last_edit.is_none()
                && self.layouts_ready()
                && self.regions_ready())
                || self.screenshots.started.elapsed() > Duration::from_secs(120));
        if due {
            if let Some(request) = &mut self.screenshots.request {
                request.requested = true;
            }
            self.screenshots.ask(ctx);
        }
        if self.screenshots.request.is_some() {
            ctx.request_repaint();
        }
    }
}

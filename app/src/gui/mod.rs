//! The desktop window: started on the wgpu device that burn computes with, so attention drawn
//! by the views and the engine's tensors live on one GPU.

pub mod app;
pub mod export;
mod file_watch;
pub mod files;
mod panels;
pub mod projector;
pub mod runs;
mod screenshots;
pub mod settings;
pub mod shortcuts;

use anyhow::{Result, anyhow};
use app::{HeadwiseApp, StartOptions};
use eframe::egui_wgpu::{WgpuConfiguration, WgpuSetup, WgpuSetupExisting};
use headwise_engine::device::shared_wgpu_setup;

pub fn run(options: StartOptions) -> Result<()> {
    let mut wgpu_options = WgpuConfiguration::default();
    // burn creates the device with the adapter's full limits and features (eframe's defaults
    // are not enough for burn's kernels), and the window draws with that same device.
    if let Some(setup) = shared_wgpu_setup() {
        wgpu_options.wgpu_setup = WgpuSetup::Existing(WgpuSetupExisting {
            instance: setup.instance,
            adapter: setup.adapter,
            device: setup.device,
            queue: setup.queue,
        });
    }
    let native = eframe::NativeOptions {
        viewport: eframe::egui::ViewportBuilder::default()
            .with_title("headwise")
            .with_inner_size([1400.0, 900.0])
            .with_drag_and_drop(true),
        renderer: eframe::Renderer::Wgpu,
        wgpu_options,
        ..Default::default()
    };
    eframe::run_native(
        "headwise",
        native,
        Box::new(move |cc| Ok(Box::new(HeadwiseApp::new(cc, options)))),
    )
    .map_err(|e| anyhow!("the window could not start: {e}"))
}

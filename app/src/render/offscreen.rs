//! Drawing egui views into an image instead of a window: `headwise render`, PNG export at a
//! higher resolution, and the frame-time benchmark. It runs the very same view code and paint
//! callbacks as the window, through its own egui context and egui_wgpu renderer.

use super::heatmap::HeatmapResources;
use super::scatter::ScatterResources;
use anyhow::{Context, Result};
use eframe::egui;
use eframe::egui_wgpu::{Renderer, RendererOptions, ScreenDescriptor, wgpu};

/// Non-sRGB like egui's own surfaces, so the colour map's bytes land in the PNG unchanged.
pub const FORMAT: wgpu::TextureFormat = wgpu::TextureFormat::Rgba8Unorm;

pub struct Offscreen {
    device: wgpu::Device,
    queue: wgpu::Queue,
    renderer: Renderer,
    ctx: egui::Context,
}

impl Offscreen {
    pub fn new(device: wgpu::Device, queue: wgpu::Queue, visuals: egui::Visuals) -> Self {
        let mut renderer = Renderer::new(
            &device,
            FORMAT,
            RendererOptions {
                msaa_samples: 1,
                depth_stencil_format: None,
                dithering: false,
                predictable_texture_filtering: true,
            },
        );
        HeatmapResources::install(&mut renderer.callback_resources, &device, FORMAT);
        ScatterResources::install(&mut renderer.callback_resources, &device, FORMAT);
        let ctx = egui::Context::default();
        ctx.set_visuals(visuals);
        crate::jobs::set_inline_work(&ctx);
        Self {
            device,
            queue,
            renderer,
            ctx,
        }
    }

    /// Bytes of attention the heatmap has uploaded and bytes it draws where the compute left
    /// them, since the document last changed.
    pub fn heatmap_bytes(&self) -> (u64, u64) {
        self.renderer
            .callback_resources
            .get::<HeatmapResources>()
            .map_or((0, 0), |h| (h.uploaded_bytes, h.in_place_bytes))
    }

    /// Lays out `ui` on a canvas of `size` points and renders it at `pixels_per_point`.
    pub fn render(
        &mut self,
        size: egui::Vec2,
        pixels_per_point: f32,
        ui: impl FnMut(&mut egui::Ui),
    ) -> Result<image::RgbaImage> {
        self.draw(size, pixels_per_point, ui, true)?
            .context("no image came back")
    }

    /// One frame as the window would draw it (layout, tessellation, GPU work, waiting for the
    /// GPU to finish) without reading the pixels back: what the frame-time benchmark times.
    pub fn frame(
        &mut self,
        size: egui::Vec2,
        pixels_per_point: f32,
        ui: impl FnMut(&mut egui::Ui),
    ) -> Result<()> {
        self.draw(size, pixels_per_point, ui, false).map(|_| ())
    }

    fn draw(
        &mut self,
        size: egui::Vec2,
        pixels_per_point: f32,
        mut ui: impl FnMut(&mut egui::Ui),
        readback: bool,
    ) -> Result<Option<image::RgbaImage>> {
        let mut input = egui::RawInput {
            screen_rect: Some(egui::Rect::from_min_size(egui::Pos2::ZERO, size)),
            max_texture_side: Some(self.device.limits().max_texture_dimension_2d as usize),
            ..Default::default()
        };
        input
            .viewports
            .entry(egui::ViewportId::ROOT)
            .or_default()
            .native_pixels_per_point = Some(pixels_per_point);
        // egui sizes some widgets from the previous pass; a few passes settle the layout. Every
        // pass's texture changes (the font atlas first) must reach the renderer in order.
        let mut delta = egui::TexturesDelta::default();
        let mut output = None;
        for _ in 0..3 {
            let mut out = self.ctx.run_ui(input.clone(), |root| {
                egui::CentralPanel::default()
                    .frame(egui::Frame::central_panel(root.style()))
                    .show(root, &mut ui);
            });
            delta.append(std::mem::take(&mut out.textures_delta));
            output = Some(out);
        }
        let painted = self.paint(&delta, output, size, readback);
        self.free_textures(&mut delta);
        painted
    }

    /// Tessellates and draws a finished egui pass, optionally reading the pixels back.
    fn paint(
        &mut self,
        delta: &egui::TexturesDelta,
        output: Option<egui::FullOutput>,
        size: egui::Vec2,
        readback: bool,
    ) -> Result<Option<image::RgbaImage>> {
        let mut output = output.context("no egui pass ran")?;
        let shapes = std::mem::take(&mut output.shapes);
        let ppp = output.pixels_per_point;
        let jobs = self.ctx.tessellate(shapes, ppp);
        let width = (size.x * ppp).round().max(1.0) as u32;
        let height = (size.y * ppp).round().max(1.0) as u32;
        let screen = ScreenDescriptor {
            size_in_pixels: [width, height],
            pixels_per_point: ppp,
        };
        for (id, images) in &delta.set {
            for image in images {
                self.renderer
                    .update_texture(&self.device, &self.queue, *id, image);
            }
        }
        let texture = self.device.create_texture(&wgpu::TextureDescriptor {
            label: Some("offscreen"),
            size: wgpu::Extent3d {
                width,
                height,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: FORMAT,
            usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
            view_formats: &[],
        });
        let view = texture.create_view(&Default::default());
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("offscreen"),
            });
        let mut commands =
            self.renderer
                .update_buffers(&self.device, &self.queue, &mut encoder, &jobs, &screen);
        {
            let fill = self.ctx.global_style().visuals.panel_fill;
            let [r, g, b, a] = fill.to_normalized_gamma_f32();
            let pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
                label: Some("offscreen"),
                color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                    view: &view,
                    depth_slice: None,
                    resolve_target: None,
                    ops: wgpu::Operations {
                        load: wgpu::LoadOp::Clear(wgpu::Color {
                            r: r as f64,
                            g: g as f64,
                            b: b as f64,
                            a: a as f64,
                        }),
                        store: wgpu::StoreOp::Store,
                    },
                })],
                depth_stencil_attachment: None,
                timestamp_writes: None,
                occlusion_query_set: None,
                multiview_mask: None,
            });
            self.renderer
                .render(&mut pass.forget_lifetime(), &jobs, &screen);
        }
        if !readback {
            commands.push(encoder.finish());
            self.queue.submit(commands);
            self.device
                .poll(wgpu::PollType::wait_indefinitely())
                .context("waiting for the GPU")?;
            return Ok(None);
        }
        let bytes_per_row = (width * 4).div_ceil(256) * 256;
        let readback = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("offscreen readback"),
            size: bytes_per_row as u64 * height as u64,
            usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
            mapped_at_creation: false,
        });
        encoder.copy_texture_to_buffer(
            wgpu::TexelCopyTextureInfo {
                texture: &texture,
                mip_level: 0,
                origin: wgpu::Origin3d::ZERO,
                aspect: wgpu::TextureAspect::All,
            },
            wgpu::TexelCopyBufferInfo {
                buffer: &readback,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(bytes_per_row),
                    rows_per_image: Some(height),
                },
            },
            wgpu::Extent3d {
                width,
                height,
                depth_or_array_layers: 1,
            },
        );
        commands.push(encoder.finish());
        self.queue.submit(commands);
        let slice = readback.slice(..);
        let (sender, receiver) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = sender.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .context("waiting for the GPU")?;
        receiver
            .recv()
            .context("the GPU never finished")?
            .context("reading the image back")?;
        let mapped = slice
            .get_mapped_range()
            .map_err(|e| anyhow::anyhow!("reading the image back: {e:?}"))?;
        let mut pixels = Vec::with_capacity((width * height * 4) as usize);
        for row in 0..height as usize {
            let start = row * bytes_per_row as usize;
            pixels.extend_from_slice(&mapped[start..start + width as usize * 4]);
        }
        drop(mapped);
        readback.unmap();
        image::RgbaImage::from_raw(width, height, pixels)
            .context("image size")
            .map(Some)
    }

    /// Frees what egui asked to free and marks the changes as handled.
    fn free_textures(&mut self, delta: &mut egui::TexturesDelta) {
        for id in &delta.free {
            self.renderer.free_texture(id);
        }
        delta.clear();
    }
}

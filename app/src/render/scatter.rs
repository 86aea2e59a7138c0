//! The query-key scatter on the GPU: a pipeline that draws every point of a layout as an
//! instanced quad (shaders/scatter.wgsl), the storage buffers that hold each layout's positions
//! and its points' colours and sizes, and the egui paint callback the views place. Positions are
//! uploaded once per layout; colours and sizes once per style; a frame only writes a camera.

use super::paint_callback::{callback_shape, pixel_rect, read_only_storage, shader_pipeline};
use super::uniform_slots::UniformSlots;
use eframe::egui;
use eframe::egui_wgpu::{CallbackResources, CallbackTrait, ScreenDescriptor, wgpu};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use wgpu::util::DeviceExt;

const SHADER: &str = include_str!("../../../shaders/scatter.wgsl");

/// Which layout: the document's generation and the layout's own version name it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LayoutKey {
    pub generation: u64,
    pub version: u64,
}

/// Every point's colour (RGBA8, alpha 0 hides it) and size factor, named by `key` so that a
/// style is uploaded once and reused until it changes.
#[derive(Clone)]
pub struct PointStyle {
    pub key: u64,
    pub colours: Arc<Vec<u32>>,
    pub sizes: Arc<Vec<f32>>,
}

/// The uniform of shaders/scatter.wgsl: `struct Params` there, field for field in the same
/// order (its three `_pad` floats are `_pad0.._pad2`); the shader's comments say what each
/// field means. Change both together.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    transform: [[f32; 4]; 4],
    rect_px: [f32; 4],
    viewport_px: [f32; 4],
    point_px: f32,
    _pad: [f32; 3],
}

// WGSL's uniform layout: a mat4x4, two vec4s and four floats, a multiple of 16 bytes in all.
const _: () = assert!(std::mem::size_of::<Params>() == 112);

struct GpuLayout {
    positions: wgpu::Buffer,
    count: u32,
    /// The bind group of the current style, with the style's key.
    styled: Option<(u64, wgpu::BindGroup)>,
}

pub struct ScatterResources {
    pipeline: wgpu::RenderPipeline,
    points_layout: wgpu::BindGroupLayout,
    params: UniformSlots<Params>,
    generation: Option<u64>,
    layouts: HashMap<LayoutKey, GpuLayout>,
}

impl ScatterResources {
    pub fn new(device: &wgpu::Device, target_format: wgpu::TextureFormat) -> Self {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("scatter"),
            source: wgpu::ShaderSource::Wgsl(SHADER.into()),
        });
        let storage = |binding| read_only_storage(binding, wgpu::ShaderStages::VERTEX);
        let params_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("scatter params"),
            entries: &[wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::VERTEX,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: true,
                    min_binding_size: wgpu::BufferSize::new(size_of::<Params>() as u64),
                },
                count: None,
            }],
        });
        let points_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("scatter points"),
            entries: &[storage(0), storage(1), storage(2)],
        });
        let pipeline = shader_pipeline(
            device,
            "scatter",
            &module,
            [&params_layout, &points_layout],
            target_format,
            Some(wgpu::BlendState::PREMULTIPLIED_ALPHA_BLENDING),
            wgpu::PrimitiveTopology::TriangleStrip,
        );
        Self {
            pipeline,
            points_layout,
            params: UniformSlots::new(device, params_layout, "scatter params", &[]),
            generation: None,
            layouts: HashMap::new(),
        }
    }

    pub fn install(
        resources: &mut CallbackResources,
        device: &wgpu::Device,
        target_format: wgpu::TextureFormat,
    ) {
        resources.insert(Self::new(device, target_format));
    }

    /// Uploads the layout and style on first use; returns the point count.
    fn prepare_layout(&mut self, device: &wgpu::Device, callback: &ScatterCallback) -> Option<u32> {
        let dims = callback.dims.max(1);
        let gpu = self.layouts.entry(callback.layout).or_insert_with(|| {
            let n = callback.points.len() / dims;
            let mut xyz = vec![0.0f32; n.max(1) * 3];
            for i in 0..n {
                for a in 0..dims.min(3) {
                    xyz[i * 3 + a] = callback.points[i * dims + a];
                }
            }
            GpuLayout {
                positions: device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("scatter positions"),
                    contents: bytemuck::cast_slice(&xyz),
                    usage: wgpu::BufferUsages::STORAGE,
                }),
                count: n as u32,
                styled: None,
            }
        });
        let n = gpu.count as usize;
        if gpu.styled.as_ref().map(|s| s.0) != Some(callback.style.key) {
            let fit = |mut v: Vec<u8>, fill: &[u8]| {
                v.resize(n.max(1) * 4, 0);
                if v.is_empty() {
                    v.extend_from_slice(fill);
                }
                v
            };
            let colours = fit(
                bytemuck::cast_slice(&callback.style.colours).to_vec(),
                &[0; 4],
            );
            let sizes = fit(
                bytemuck::cast_slice(&callback.style.sizes).to_vec(),
                &[0; 4],
            );
            let buffer = |label, bytes: &[u8]| {
                device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: bytes,
                    usage: wgpu::BufferUsages::STORAGE,
                })
            };
            let (colours, sizes) = (
                buffer("scatter colours", &colours),
                buffer("scatter sizes", &sizes),
            );
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("scatter points"),
                layout: &self.points_layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: gpu.positions.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: colours.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: sizes.as_entire_binding(),
                    },
                ],
            });
            gpu.styled = Some((callback.style.key, bind_group));
        }
        Some(gpu.count)
    }
}

/// One scatter in a view: which layout, how its points look, and the camera.
pub struct ScatterCallback {
    pub layout: LayoutKey,
    /// [n, dims], only read the first time this layout is drawn.
    pub points: Arc<Vec<f32>>,
    pub dims: usize,
    pub style: PointStyle,
    /// Data coordinates → the rectangle's clip space, column-major.
    pub transform: [[f32; 4]; 4],
    /// The drawing's rectangle in points.
    pub rect: egui::Rect,
    /// A point's diameter in points at size factor 1.
    pub point_size: f32,
    slot: AtomicU32,
}

impl ScatterCallback {
    pub fn new(
        layout: LayoutKey,
        points: Arc<Vec<f32>>,
        dims: usize,
        style: PointStyle,
        transform: [[f32; 4]; 4],
        rect: egui::Rect,
        point_size: f32,
    ) -> Self {
        Self {
            layout,
            points,
            dims,
            style,
            transform,
            rect,
            point_size,
            slot: AtomicU32::new(u32::MAX),
        }
    }

    pub fn into_shape(self, clip: egui::Rect) -> egui::Shape {
        callback_shape(self.rect, clip, self)
    }
}

impl CallbackTrait for ScatterCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        _queue: &wgpu::Queue,
        screen: &ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        let Some(res) = resources.get_mut::<ScatterResources>() else {
            return Vec::new();
        };
        if res.generation != Some(self.layout.generation) {
            res.generation = Some(self.layout.generation);
            res.layouts.clear();
        }
        if res.prepare_layout(device, self).is_none() {
            return Vec::new();
        }
        let ppp = screen.pixels_per_point;
        let [w, h] = screen.size_in_pixels.map(|v| v as f32);
        let rect_px = pixel_rect(self.rect, ppp);
        let params = Params {
            transform: self.transform,
            rect_px,
            viewport_px: [0.0, 0.0, w, h],
            point_px: self.point_size * ppp,
            _pad: [0.0; 3],
        };
        self.slot.store(res.params.queue(params), Ordering::Relaxed);
        Vec::new()
    }

    fn finish_prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        if let Some(res) = resources.get_mut::<ScatterResources>() {
            res.params.flush(device, queue, &[]);
        }
        Vec::new()
    }

    fn paint(
        &self,
        info: egui::PaintCallbackInfo,
        render_pass: &mut wgpu::RenderPass<'static>,
        resources: &CallbackResources,
    ) {
        let slot = self.slot.load(Ordering::Relaxed);
        let Some(res) = resources.get::<ScatterResources>() else {
            return;
        };
        let Some(gpu) = res.layouts.get(&self.layout) else {
            return;
        };
        let Some((_, bind_group)) = &gpu.styled else {
            return;
        };
        if gpu.count == 0 {
            return;
        }
        // Points are placed in framebuffer pixels; the whole target is the viewport, and the
        // scissor (egui's clip rectangle) keeps them inside the view.
        let [w, h] = [info.screen_size_px[0] as f32, info.screen_size_px[1] as f32];
        render_pass.set_viewport(0.0, 0.0, w, h, 0.0, 1.0);
        render_pass.set_pipeline(&res.pipeline);
        if !res.params.bind(render_pass, 0, slot) {
            return;
        }
        render_pass.set_bind_group(1, bind_group, &[]);
        render_pass.draw(0..4, 0..gpu.count);
    }
}

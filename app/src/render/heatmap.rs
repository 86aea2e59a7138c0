//! The attention heatmap on the GPU: a pipeline that draws one matrix from a storage buffer
//! (shaders/heatmap.wgsl), the buffers it reads, and the egui paint callback that views place
//! wherever a matrix should appear. The same callback draws in the window and offscreen.

use super::colormap::{ColorMap, all_tables_rgba};
use super::paint_callback::{callback_shape, pixel_rect, read_only_storage, shader_pipeline};
use super::uniform_slots::UniformSlots;
use eframe::egui;
use eframe::egui_wgpu::{CallbackResources, CallbackTrait, ScreenDescriptor, wgpu};
use headwise_engine::analysis::aggregate::Reduce;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use wgpu::util::DeviceExt;

/// The colour tables, binding 1 of the parameters' group.
fn lut_entry(lut: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding: 1,
        resource: lut.as_entire_binding(),
    }
}

const SHADER: &str = include_str!("../../../shaders/heatmap.wgsl");

/// Which attention matrix of a session to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Matrix {
    Head {
        layer: usize,
        head: usize,
    },
    /// Mean or max over the heads of one layer.
    Layer {
        layer: usize,
        reduce: Reduce,
    },
    /// Mean or max over every head of every layer.
    Model {
        reduce: Reduce,
    },
    /// An edited run's head minus the same head of its base, drawn as (Δ + 1) / 2.
    Change {
        layer: usize,
        head: usize,
    },
    /// ∂target/∂A ⊙ A of one head (a gradient run), over its largest magnitude: signed as
    /// (g/max + 1) / 2 for the diverging map, or its positive part as g⁺/max.
    Gradient {
        layer: usize,
        head: usize,
        signed: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MatrixKey {
    pub input: usize,
    pub matrix: Matrix,
    /// A max-pooled copy for long inputs in the overview, instead of the full matrix.
    pub thumbnail: bool,
    /// A region of a head reduced to a square of pixels, for attention that is not
    /// materialised (long inputs): computed from q, k and lse for what the head view shows.
    pub region: Option<Region>,
}

/// Rows × columns of one matrix, reduced to `pixels` × `pixels` block maxima or means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region {
    pub rows: [u32; 2],
    pub cols: [u32; 2],
    pub pixels: u32,
    pub reduce: Reduce,
}

impl MatrixKey {
    /// A whole matrix, drawn at its own size.
    pub fn full(input: usize, matrix: Matrix) -> Self {
        Self {
            input,
            matrix,
            thumbnail: false,
            region: None,
        }
    }

    /// Whether the matrix's rows and columns are pixels rather than tokens (no token is hidden
    /// from it).
    pub fn is_pixels(&self) -> bool {
        self.thumbnail || self.region.is_some()
    }
}

/// A matrix that already lies on the GPU, in a buffer on the renderer's own device (the trace
/// burn computed there): drawn from where it is, without a copy.
pub struct DeviceMatrix {
    pub buffer: wgpu::Buffer,
    /// Where the matrix's range starts in `buffer`, in bytes.
    pub offset: u64,
    /// The range's length in bytes; the matrix lies inside it.
    pub size: u64,
    /// The matrix's first value inside the range, in f32s (a head's place in its layer).
    pub first: u64,
    /// Side of the matrix.
    pub side: usize,
}

/// Where the heatmap's numbers come from (the app's open session). Called on the render thread
/// the first time a matrix is drawn; its result stays on the GPU until the generation changes.
pub trait MatrixSource: Send + Sync {
    /// Changes whenever the data behind the keys changes (a new run, another session).
    fn generation(&self) -> u64;
    /// The matrix for `key` where it already lies on the GPU, if it does; tried before
    /// [`MatrixSource::matrix`].
    fn device_matrix(&self, _key: MatrixKey) -> Option<DeviceMatrix> {
        None
    }
    /// The matrix for `key`: its side and row-major values.
    fn matrix(&self, key: MatrixKey) -> Option<(usize, Vec<f32>)>;
    /// Whether a `key` that has no matrix yet may have one later (it is being computed): the
    /// heatmap then asks again rather than remember that there is none.
    fn pending(&self, _key: MatrixKey) -> bool {
        false
    }
    /// Which stored rows/columns to show, in order (all, or all but the special tokens).
    fn visible_tokens(&self, key: MatrixKey, hide_special: bool) -> Vec<u32>;
}

/// How weights become colours.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HeatmapStyle {
    pub colormap: ColorMap,
    pub log_scale: bool,
    /// The weight drawn with the top colour.
    pub vmax: f32,
    /// Log scale: the weight drawn with the bottom colour.
    pub log_min: f32,
}

impl Default for HeatmapStyle {
    fn default() -> Self {
        Self {
            colormap: ColorMap::Viridis,
            log_scale: false,
            vmax: 1.0,
            log_min: 1e-4,
        }
    }
}

/// The uniform of shaders/heatmap.wgsl: `struct Params` there, field for field in the same
/// order; the shader's comments say what each field means. Change both together.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rect_px: [f32; 4],
    window: [f32; 4],
    side: u32,
    visible: u32,
    log_scale: u32,
    colormap: u32,
    vmax: f32,
    log_floor: f32,
    /// Index of the matrix's first value in the bound range.
    first: u32,
    _pad: f32,
}

// WGSL's uniform layout: two vec4s, eight 4-byte scalars, a multiple of 16 bytes in all.
const _: () = assert!(std::mem::size_of::<Params>() == 64);

/// A matrix the heatmap can bind: uploaded by the heatmap, or a range of the compute's buffer.
struct GpuMatrix {
    side: usize,
    buffer: wgpu::Buffer,
    offset: u64,
    size: u64,
    first: u32,
}

impl GpuMatrix {
    fn uploaded(device: &wgpu::Device, side: usize, values: &[f32]) -> Self {
        let buffer = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("attention"),
            contents: bytemuck::cast_slice(values),
            usage: wgpu::BufferUsages::STORAGE,
        });
        Self {
            side,
            size: buffer.size(),
            buffer,
            offset: 0,
            first: 0,
        }
    }

    /// Binds the range from the nearest offset the device allows at or below the matrix's own,
    /// and moves `first` up by the difference.
    fn in_place(m: DeviceMatrix, alignment: u64, max_binding: u64) -> Option<Self> {
        let alignment = alignment.max(4);
        let offset = m.offset - m.offset % alignment;
        let size = m.size + (m.offset - offset);
        let first = (m.offset - offset) / 4 + m.first;
        let needed = (first + (m.side * m.side) as u64) * 4;
        if size > max_binding || needed > size || m.side == 0 {
            return None;
        }
        Some(Self {
            side: m.side,
            buffer: m.buffer,
            offset,
            size,
            first: u32::try_from(first).ok()?,
        })
    }

    fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: wgpu::BufferSize::new(self.size),
        })
    }
}

/// Everything the heatmap needs on the GPU; lives in egui_wgpu's callback resources.
pub struct HeatmapResources {
    pipeline: wgpu::RenderPipeline,
    matrix_layout: wgpu::BindGroupLayout,
    lut: wgpu::Buffer,
    params: UniformSlots<Params>,
    generation: Option<u64>,
    matrices: HashMap<MatrixKey, Option<GpuMatrix>>,
    bind_groups: HashMap<(MatrixKey, bool), (wgpu::BindGroup, u32)>,
    max_binding: u64,
    offset_alignment: u64,
    /// Bytes of attention the heatmap uploaded, for the status bar.
    pub uploaded_bytes: u64,
    /// Bytes of attention drawn where the compute left them, for the status bar.
    pub in_place_bytes: u64,
}

impl HeatmapResources {
    pub fn new(device: &wgpu::Device, target_format: wgpu::TextureFormat) -> Self {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("heatmap"),
            source: wgpu::ShaderSource::Wgsl(SHADER.into()),
        });
        let storage = |binding| read_only_storage(binding, wgpu::ShaderStages::FRAGMENT);
        let params_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("heatmap params"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: true,
                        min_binding_size: wgpu::BufferSize::new(size_of::<Params>() as u64),
                    },
                    count: None,
                },
                storage(1),
            ],
        });
        let matrix_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("heatmap matrix"),
            entries: &[storage(0), storage(1)],
        });
        let pipeline = shader_pipeline(
            device,
            "heatmap",
            &module,
            [&params_layout, &matrix_layout],
            target_format,
            None,
            wgpu::PrimitiveTopology::TriangleList,
        );
        let lut = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("colour maps"),
            contents: bytemuck::cast_slice(&all_tables_rgba()),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let params = UniformSlots::new(device, params_layout, "heatmap params", &[lut_entry(&lut)]);
        let limits = device.limits();
        Self {
            pipeline,
            matrix_layout,
            lut,
            params,
            generation: None,
            matrices: HashMap::new(),
            bind_groups: HashMap::new(),
            max_binding: limits
                .max_storage_buffer_binding_size
                .min(limits.max_buffer_size),
            offset_alignment: limits.min_storage_buffer_offset_alignment as u64,
            uploaded_bytes: 0,
            in_place_bytes: 0,
        }
    }

    /// Registers the heatmap with an egui_wgpu renderer (the window's or an offscreen one).
    pub fn install(
        resources: &mut CallbackResources,
        device: &wgpu::Device,
        target_format: wgpu::TextureFormat,
    ) {
        resources.insert(Self::new(device, target_format));
    }

    /// The bind group for `key`: the matrix where it lies on the GPU if the source has it there,
    /// else uploaded on first use. None when the source has no such matrix or it is too large
    /// for one GPU binding.
    fn matrix_bind_group(
        &mut self,
        device: &wgpu::Device,
        source: &dyn MatrixSource,
        key: MatrixKey,
        hide_special: bool,
    ) -> Option<u32> {
        if let Some((_, visible)) = self.bind_groups.get(&(key, hide_special)) {
            return Some(*visible);
        }
        let (max_binding, alignment) = (self.max_binding, self.offset_alignment);
        let (mut uploaded, mut in_place) = (0, 0);
        if let std::collections::hash_map::Entry::Vacant(e) = self.matrices.entry(key) {
            let made = (|| {
                if let Some(m) = source
                    .device_matrix(key)
                    .and_then(|m| GpuMatrix::in_place(m, alignment, max_binding))
                {
                    in_place = (m.side * m.side * 4) as u64;
                    return Some(m);
                }
                let (side, values) = source.matrix(key)?;
                let bytes = (values.len() * 4) as u64;
                if bytes > max_binding || values.is_empty() {
                    return None;
                }
                uploaded = bytes;
                Some(GpuMatrix::uploaded(device, side, &values))
            })();
            if made.is_none() && source.pending(key) {
                return None;
            }
            e.insert(made);
        }
        let gpu = self.matrices.get(&key).expect("inserted above");
        self.uploaded_bytes += uploaded;
        self.in_place_bytes += in_place;
        let gpu = gpu.as_ref()?;
        let visible: Vec<u32> = if key.is_pixels() {
            (0..gpu.side as u32).collect()
        } else {
            source.visible_tokens(key, hide_special)
        };
        let visible = if visible.is_empty() { vec![0] } else { visible };
        let tokens = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("visible tokens"),
            contents: bytemuck::cast_slice(&visible),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("attention"),
            layout: &self.matrix_layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: gpu.binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: tokens.as_entire_binding(),
                },
            ],
        });
        let count = visible.len() as u32;
        self.bind_groups
            .insert((key, hide_special), (bind_group, count));
        Some(count)
    }

    /// The side of `key`'s matrix and the index of its first value in its binding.
    fn placement(&self, key: MatrixKey) -> (usize, u32) {
        self.matrices
            .get(&key)
            .and_then(|m| m.as_ref())
            .map_or((0, 0), |m| (m.side, m.first))
    }
}

/// One heatmap in a view: what to draw, where, and how.
pub struct HeatmapCallback {
    pub source: Arc<dyn MatrixSource>,
    pub key: MatrixKey,
    pub hide_special: bool,
    /// The drawing's rectangle in points (the callback's rect may be clipped; this is not).
    pub rect: egui::Rect,
    /// The visible part in token units: first column, first row, columns, rows.
    pub window: [f32; 4],
    pub style: HeatmapStyle,
    slot: AtomicU32,
}

impl HeatmapCallback {
    pub fn new(
        source: Arc<dyn MatrixSource>,
        key: MatrixKey,
        rect: egui::Rect,
        window: [f32; 4],
        hide_special: bool,
        style: HeatmapStyle,
    ) -> Self {
        Self {
            source,
            key,
            hide_special,
            rect,
            window,
            style,
            slot: AtomicU32::new(u32::MAX),
        }
    }

    /// The shape to add to a painter: draws the matrix in `clip`, laid out over `self.rect`.
    pub fn into_shape(self, clip: egui::Rect) -> egui::Shape {
        callback_shape(self.rect, clip, self)
    }
}

impl CallbackTrait for HeatmapCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        _queue: &wgpu::Queue,
        screen: &ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        let Some(res) = resources.get_mut::<HeatmapResources>() else {
            return Vec::new();
        };
        let generation = self.source.generation();
        if res.generation != Some(generation) {
            res.generation = Some(generation);
            res.matrices.clear();
            res.bind_groups.clear();
            res.uploaded_bytes = 0;
            res.in_place_bytes = 0;
        }
        let Some(visible) =
            res.matrix_bind_group(device, self.source.as_ref(), self.key, self.hide_special)
        else {
            return Vec::new();
        };
        let ppp = screen.pixels_per_point;
        let style = &self.style;
        let (side, first) = res.placement(self.key);
        let params = Params {
            rect_px: pixel_rect(self.rect, ppp),
            window: self.window,
            side: side as u32,
            visible,
            log_scale: style.log_scale as u32,
            colormap: style.colormap.index(),
            vmax: style.vmax.max(1e-30),
            log_floor: style.log_min.max(1e-30).log10(),
            first,
            _pad: 0.0,
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
        // The first callback to get here writes every callback's parameters in one go.
        if let Some(res) = resources.get_mut::<HeatmapResources>() {
            let lut = lut_entry(&res.lut);
            res.params.flush(device, queue, &[lut]);
        }
        Vec::new()
    }

    fn paint(
        &self,
        _info: egui::PaintCallbackInfo,
        render_pass: &mut wgpu::RenderPass<'static>,
        resources: &CallbackResources,
    ) {
        let slot = self.slot.load(Ordering::Relaxed);
        let Some(res) = resources.get::<HeatmapResources>() else {
            return;
        };
        let Some((matrix, _)) = res.bind_groups.get(&(self.key, self.hide_special)) else {
            return;
        };
        render_pass.set_pipeline(&res.pipeline);
        if !res.params.bind(render_pass, 0, slot) {
            return;
        }
        render_pass.set_bind_group(1, matrix, &[]);
        render_pass.draw(0..3, 0..1);
    }
}

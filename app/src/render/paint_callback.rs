//! What the heatmap's and the scatter's paint callbacks share besides their parameter slots
//! (`uniform_slots.rs`): their pipeline's shape, the shape a view adds them as, and their
//! rectangle in framebuffer pixels, where the shaders place what they draw.

use eframe::egui;
use eframe::egui_wgpu::{CallbackTrait, wgpu};

/// A read-only storage buffer at `binding`, seen by the shader stages `visibility`.
pub fn read_only_storage(
    binding: u32,
    visibility: wgpu::ShaderStages,
) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only: true },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

/// A render pipeline of a shader whose `vs_main` makes its own vertices (no vertex buffers) and
/// whose `fs_main` writes one colour target: the parameters in group 0, the data in group 1.
pub fn shader_pipeline(
    device: &wgpu::Device,
    label: &str,
    module: &wgpu::ShaderModule,
    groups: [&wgpu::BindGroupLayout; 2],
    target_format: wgpu::TextureFormat,
    blend: Option<wgpu::BlendState>,
    topology: wgpu::PrimitiveTopology,
) -> wgpu::RenderPipeline {
    let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(label),
        bind_group_layouts: &[Some(groups[0]), Some(groups[1])],
        immediate_size: 0,
    });
    device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
        label: Some(label),
        layout: Some(&layout),
        vertex: wgpu::VertexState {
            module,
            entry_point: Some("vs_main"),
            buffers: &[],
            compilation_options: Default::default(),
        },
        fragment: Some(wgpu::FragmentState {
            module,
            entry_point: Some("fs_main"),
            targets: &[Some(wgpu::ColorTargetState {
                format: target_format,
                blend,
                write_mask: wgpu::ColorWrites::ALL,
            })],
            compilation_options: Default::default(),
        }),
        primitive: wgpu::PrimitiveState {
            topology,
            ..Default::default()
        },
        depth_stencil: None,
        multisample: wgpu::MultisampleState::default(),
        multiview_mask: None,
        cache: None,
    })
}

/// `callback` drawing over `rect`, clipped to `clip`, as a shape for a painter.
pub fn callback_shape(
    rect: egui::Rect,
    clip: egui::Rect,
    callback: impl CallbackTrait + 'static,
) -> egui::Shape {
    egui::Shape::Callback(eframe::egui_wgpu::Callback::new_paint_callback(
        clip.intersect(rect),
        callback,
    ))
}

/// `rect` (in points) in framebuffer pixels, as [x, y, width, height].
pub fn pixel_rect(rect: egui::Rect, pixels_per_point: f32) -> [f32; 4] {
    [
        rect.min.x * pixels_per_point,
        rect.min.y * pixels_per_point,
        rect.width() * pixels_per_point,
        rect.height() * pixels_per_point,
    ]
}

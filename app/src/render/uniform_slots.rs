//! Per-draw parameters of a pipeline's paint callbacks: one uniform buffer holds every draw's
//! parameters for a frame, each at its own dynamic offset. Callbacks queue theirs in `prepare`,
//! the first `finish_prepare` writes them all in one go, and `paint` binds its own slot. The
//! heatmap and the scatter both draw this way, many times a frame (one per overview cell).

use eframe::egui_wgpu::wgpu;

/// Slots are this far apart: wgpu's largest required dynamic-offset alignment.
const STRIDE: u64 = 256;

pub struct UniformSlots<P> {
    label: &'static str,
    layout: wgpu::BindGroupLayout,
    buffer: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
    capacity: u64,
    pending: Vec<P>,
}

impl<P: bytemuck::Pod> UniformSlots<P> {
    /// `layout` has the parameters at binding 0 (dynamic offset); `extra` gives the group's
    /// other entries (e.g. a colour table), the same each time the buffer grows.
    pub fn new(
        device: &wgpu::Device,
        layout: wgpu::BindGroupLayout,
        label: &'static str,
        extra: &[wgpu::BindGroupEntry],
    ) -> Self {
        let capacity = 64;
        let (buffer, bind_group) = Self::allocate(device, &layout, label, capacity, extra);
        Self {
            label,
            layout,
            buffer,
            bind_group,
            capacity,
            pending: Vec::new(),
        }
    }

    fn allocate(
        device: &wgpu::Device,
        layout: &wgpu::BindGroupLayout,
        label: &'static str,
        capacity: u64,
        extra: &[wgpu::BindGroupEntry],
    ) -> (wgpu::Buffer, wgpu::BindGroup) {
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: capacity * STRIDE,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &buffer,
                offset: 0,
                size: wgpu::BufferSize::new(size_of::<P>() as u64),
            }),
        }];
        entries.extend(extra.iter().cloned());
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout,
            entries: &entries,
        });
        (buffer, bind_group)
    }

    /// Queues one draw's parameters; returns its slot.
    pub fn queue(&mut self, params: P) -> u32 {
        self.pending.push(params);
        (self.pending.len() - 1) as u32
    }

    /// Writes every queued draw's parameters (growing the buffer if needed).
    pub fn flush(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        extra: &[wgpu::BindGroupEntry],
    ) {
        if self.pending.is_empty() {
            return;
        }
        let needed = self.pending.len() as u64;
        if needed > self.capacity {
            self.capacity = needed.next_power_of_two();
            (self.buffer, self.bind_group) =
                Self::allocate(device, &self.layout, self.label, self.capacity, extra);
        }
        let mut bytes = vec![0u8; (needed * STRIDE) as usize];
        for (i, p) in self.pending.iter().enumerate() {
            let at = i * STRIDE as usize;
            bytes[at..at + size_of::<P>()].copy_from_slice(bytemuck::bytes_of(p));
        }
        queue.write_buffer(&self.buffer, 0, &bytes);
        self.pending.clear();
    }

    /// Binds `slot`'s parameters as bind group `index`; false if there is no such slot.
    pub fn bind(&self, render_pass: &mut wgpu::RenderPass<'static>, index: u32, slot: u32) -> bool {
        if slot == u32::MAX || slot as u64 >= self.capacity {
            return false;
        }
        render_pass.set_bind_group(index, &self.bind_group, &[slot * STRIDE as u32]);
        true
    }
}

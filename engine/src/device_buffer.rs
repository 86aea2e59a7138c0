//! The GPU buffer behind a device tensor, so that a renderer sharing burn's wgpu device can bind
//! a trace where it lies instead of reading it back and uploading it again.
//!
//! burn keeps tensors inside pooled buffers: a tensor is a range of a larger `wgpu::Buffer`. The
//! handle returned here holds burn's allocation, so the range is neither freed nor reused while
//! it lives; drop it when the renderer no longer draws from it.

use burn::backend::Wgpu;
use burn::backend::wgpu::CubeBackend;
use burn::cubecl::wgpu::{AutoCompiler, WgpuServer};
use burn::tensor::wgpu::wgpu;
use burn::tensor::{DType, Tensor};
use burn_cubecl::tensor::CubeTensor;
use std::any::Any;
use std::sync::Mutex;

/// A contiguous f32 tensor's bytes inside one of burn's wgpu buffers.
pub struct DeviceBuffer {
    buffer: wgpu::Buffer,
    offset: u64,
    size: u64,
    /// burn's hold on the allocation; only ever dropped.
    _allocation: Mutex<Box<dyn Any + Send>>,
}

impl DeviceBuffer {
    /// The buffer range of `tensor`, or None when it is not on a wgpu device, is not f32 or is
    /// not laid out contiguously (a caller then reads it back instead). Waits for the work that
    /// computes the tensor to be submitted, so drawing after this sees its final values.
    pub fn of<const D: usize>(tensor: &Tensor<D>) -> Option<Self> {
        let cube = cube_tensor(tensor)?;
        if !cube.is_contiguous() {
            return None;
        }
        let elements = tensor.shape().num_elements() as u64;
        let allocation = cube
            .client
            .get_resource::<WgpuServer<AutoCompiler>>(cube.handle.clone())
            .ok()?;
        let resource = allocation.resource();
        let size = elements * 4;
        if resource.size < size {
            return None;
        }
        Some(Self {
            buffer: resource.buffer.clone(),
            offset: resource.offset,
            size,
            _allocation: Mutex::new(Box::new(allocation)),
        })
    }

    /// The pooled buffer the tensor lies in (shared with other tensors: bind only
    /// `offset..offset + size`).
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// Where the tensor starts in `buffer`, in bytes.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The tensor's length in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// The f32 CubeCL tensor behind a wgpu tensor, once the work that computes it is queued (burn's
/// fusion stream resolves it); None for any other backend or element type.
pub(crate) fn cube_tensor<const D: usize>(tensor: &Tensor<D>) -> Option<CubeTensor> {
    let fusion = tensor.clone().try_into_primitive::<Wgpu>().ok()?;
    let client = fusion.client.clone();
    let cube = client.resolve_tensor_float::<CubeBackend>(fusion);
    (cube.dtype == DType::F32).then_some(cube)
}

impl std::fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceBuffer")
            .field("offset", &self.offset)
            .field("size", &self.size)
            .finish()
    }
}

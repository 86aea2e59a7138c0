//! Choosing and creating the burn device: wgpu on a real GPU, burn's CPU backend otherwise.
//!
//! Lavapipe (Mesa's Vulkan on the CPU) is a correct wgpu adapter but computes several times
//! slower than burn's Flex CPU backend, so `auto` only picks wgpu when the adapter is real
//! hardware. `gpu` forces wgpu whatever the adapter is (that is how CI tests the wgpu path).

use crate::error::{EngineError, Result};
/// burn's device handle, re-exported so callers need not depend on burn to pass one along.
pub use burn::tensor::Device;
use burn::tensor::wgpu::{WgpuSetup, wgpu};
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Auto,
    Gpu,
    Cpu,
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "gpu" | "wgpu" => Ok(Self::Gpu),
            "cpu" => Ok(Self::Cpu),
            other => Err(format!("unknown device '{other}' (auto, gpu or cpu)")),
        }
    }
}

/// The device computations run on, with what a person needs to know about it.
#[derive(Clone)]
pub struct ComputeDevice {
    pub device: Device,
    /// e.g. "wgpu: NVIDIA GeForce RTX 4090 (Vulkan)" or "cpu: burn flex".
    pub description: String,
    pub is_gpu: bool,
}

/// The process's one wgpu runtime: burn can initialise it only once, and the app must draw
/// with the very same device.
struct WgpuRuntime {
    device: Device,
    setup: WgpuSetup,
}

static WGPU: OnceLock<std::result::Result<WgpuRuntime, String>> = OnceLock::new();

fn wgpu_runtime() -> std::result::Result<&'static WgpuRuntime, String> {
    WGPU.get_or_init(|| {
        Device::wgpu_options()
            .init_with_setup()
            .map(|(device, setup)| WgpuRuntime { device, setup })
            .map_err(|e| format!("{e}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// The wgpu handles burn computes with, for a renderer that must share them.
pub fn shared_wgpu_setup() -> Option<WgpuSetup> {
    wgpu_runtime().ok().map(|r| r.setup.clone())
}

/// Whether burn's wgpu adapter is a CPU implementation (lavapipe, llvmpipe, SwiftShader), whose
/// limits differ from a GPU's; false when there is no wgpu runtime.
pub fn wgpu_adapter_is_software() -> bool {
    wgpu_runtime()
        .is_ok_and(|runtime| runtime.setup.adapter.get_info().device_type == wgpu::DeviceType::Cpu)
}

fn describe(setup: &WgpuSetup) -> (String, bool) {
    let info = setup.adapter.get_info();
    let hardware = matches!(
        info.device_type,
        wgpu::DeviceType::DiscreteGpu
            | wgpu::DeviceType::IntegratedGpu
            | wgpu::DeviceType::VirtualGpu
    );
    (
        format!(
            "wgpu: {} ({:?}, {:?})",
            info.name, info.backend, info.device_type
        ),
        hardware,
    )
}

fn cpu() -> ComputeDevice {
    ComputeDevice {
        device: Device::flex(),
        description: "cpu: burn flex".into(),
        is_gpu: false,
    }
}

/// Creates the device for `choice`. `Auto` never fails: without a usable GPU it computes on
/// the CPU.
pub fn create_device(choice: DeviceChoice) -> Result<ComputeDevice> {
    match choice {
        DeviceChoice::Cpu => Ok(cpu()),
        DeviceChoice::Gpu => {
            let runtime =
                wgpu_runtime().map_err(|e| EngineError::Device(format!("no wgpu device: {e}")))?;
            let (description, _) = describe(&runtime.setup);
            Ok(ComputeDevice {
                device: runtime.device.clone(),
                description,
                is_gpu: true,
            })
        }
        DeviceChoice::Auto => match wgpu_runtime() {
            Ok(runtime) => {
                let (description, hardware) = describe(&runtime.setup);
                if hardware {
                    Ok(ComputeDevice {
                        device: runtime.device.clone(),
                        description,
                        is_gpu: true,
                    })
                } else {
                    Ok(cpu())
                }
            }
            Err(_) => Ok(cpu()),
        },
    }
}

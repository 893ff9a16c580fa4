//! Where networks run: the CPU, or a GPU through one of burn 0.22's GPU backends.
//!
//! `cpu` is burn-flex, with artemis-kernels for training (always built). The GPU backends are
//! cargo features of the binary, off by default so that the default build stays CPU-only:
//!
//! - `vulkan` (`--device vulkan[:N]`): wgpu on Vulkan, for NVIDIA, AMD and Intel GPUs with a
//!   Vulkan driver; builds from crates.io alone. The N-th discrete GPU, else the N-th integrated
//!   one. Software Vulkan (lavapipe, SwiftShader) is never picked: burn's kernels crash or
//!   compute wrong results on it (see the README).
//! - `cuda` (`--device cuda[:N]`): burn's CUDA backend (its build downloads LLVM).
//! - `metal` (`--device metal`): wgpu on Metal (macOS).
//!
//! ONNX Runtime inference takes `cuda[:N]` too, without any feature: its CUDA execution
//! provider, when the runtime library was built with it (`scripts/setup --gpu`).
//!
//! A training command takes a list, `--device vulkan:0,vulkan:1`: one replica per device,
//! gradients averaged every step (see `train`).

use crate::{EngineError, Result};
use burn::prelude::Device;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

/// One device, as the user names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum ComputeDevice {
    /// The CPU (burn-flex; artemis-kernels for training).
    #[default]
    Cpu,
    /// GPU `N` through wgpu on Vulkan (cargo feature `vulkan`).
    Vulkan(usize),
    /// CUDA GPU `N` (burn: cargo feature `cuda`; ONNX Runtime: its CUDA execution provider).
    Cuda(usize),
    /// The Metal GPU (cargo feature `metal`).
    Metal,
}

impl ComputeDevice {
    /// Whether this is a GPU.
    pub fn is_gpu(self) -> bool {
        self != ComputeDevice::Cpu
    }

    /// The cargo feature that compiles this device's burn backend in (`None` for the CPU).
    pub fn feature(self) -> Option<&'static str> {
        match self {
            ComputeDevice::Cpu => None,
            ComputeDevice::Vulkan(_) => Some("vulkan"),
            ComputeDevice::Cuda(_) => Some("cuda"),
            ComputeDevice::Metal => Some("metal"),
        }
    }

    /// The burn device (without autodiff), opened: a GPU that is missing, or a backend this
    /// binary was built without, is an error that says which and what to do, never a panic.
    /// A device is opened once per process (wgpu's runtime refuses a second start) and the
    /// same handle returned after.
    pub fn open(self) -> Result<Device> {
        static OPENED: Mutex<Vec<(ComputeDevice, Device)>> = Mutex::new(Vec::new());
        let mut opened = OPENED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, d)) = opened.iter().find(|(c, _)| *c == self) {
            return Ok(d.clone());
        }
        let device = match self {
            ComputeDevice::Cpu => Device::flex(),
            ComputeDevice::Vulkan(n) => open_vulkan(n)?,
            ComputeDevice::Cuda(n) => open_cuda(n)?,
            ComputeDevice::Metal => open_metal()?,
        };
        opened.push((self, device.clone()));
        Ok(device)
    }

    /// Where ONNX Runtime runs for this device: CUDA GPUs through its CUDA execution
    /// provider, everything else on the CPU.
    pub fn onnx_device(self) -> ComputeDevice {
        match self {
            ComputeDevice::Cuda(_) => self,
            _ => ComputeDevice::Cpu,
        }
    }

    /// burn's device for a network, and where it opened: this device, except that a `cuda`
    /// one whose network ONNX Runtime may serve (`onnx_may_serve`) falls back to the CPU
    /// when this build has no CUDA backend of burn's (ONNX Runtime's CUDA provider needs
    /// none; burn's copy is then for heat maps and the fallback).
    pub fn open_for_burn(self, onnx_may_serve: bool) -> Result<(Device, ComputeDevice)> {
        match self.open() {
            Ok(d) => Ok((d, self)),
            Err(_) if onnx_may_serve && matches!(self, ComputeDevice::Cuda(_)) => {
                Ok((ComputeDevice::Cpu.open()?, ComputeDevice::Cpu))
            }
            Err(e) => Err(e),
        }
    }

    fn error(self, reason: impl Into<String>) -> EngineError {
        EngineError::Device {
            device: self.to_string(),
            reason: reason.into(),
        }
    }

    fn not_built(self) -> EngineError {
        let feature = self.feature().unwrap_or("");
        self.error(format!(
            "this artemis was built without the `{feature}` backend; rebuild with \
             `cargo build --release --features {feature}` (see the README's GPU section)"
        ))
    }
}

#[cfg(feature = "vulkan")]
fn open_vulkan(n: usize) -> Result<Device> {
    use burn::tensor::DeviceKind;
    use burn::tensor::wgpu::WgpuBackend;
    let init = |kind: DeviceKind| {
        Device::wgpu_options()
            .device_kind(kind)
            .graphics_api(WgpuBackend::Vulkan)
            .init()
    };
    init(DeviceKind::DiscreteGpu(n))
        .or_else(|_| init(DeviceKind::IntegratedGpu(n)))
        .map_err(|e| {
            ComputeDevice::Vulkan(n).error(format!(
                "no Vulkan GPU number {n} (discrete or integrated) was found: {e}. A software \
                 Vulkan (lavapipe, SwiftShader) is not used: burn's kernels fail on it"
            ))
        })
}

#[cfg(not(feature = "vulkan"))]
fn open_vulkan(n: usize) -> Result<Device> {
    Err(ComputeDevice::Vulkan(n).not_built())
}

#[cfg(feature = "cuda")]
fn open_cuda(n: usize) -> Result<Device> {
    // burn's CUDA runtime panics on a missing driver or GPU; turn that into an error.
    let probe = std::panic::catch_unwind(|| {
        let device = Device::cuda(n);
        let _ = burn::tensor::Tensor::<1>::zeros([1], &device).into_data();
        device
    });
    probe.map_err(|_| {
        ComputeDevice::Cuda(n).error(format!(
            "CUDA GPU {n} could not be opened (no NVIDIA driver, or no such GPU)"
        ))
    })
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(n: usize) -> Result<Device> {
    Err(ComputeDevice::Cuda(n).not_built())
}

#[cfg(feature = "metal")]
fn open_metal() -> Result<Device> {
    use burn::tensor::DeviceKind;
    use burn::tensor::wgpu::WgpuBackend;
    Device::wgpu_options()
        .device_kind(DeviceKind::DefaultDevice)
        .graphics_api(WgpuBackend::Metal)
        .init()
        .map_err(|e| ComputeDevice::Metal.error(format!("no Metal GPU could be opened: {e}")))
}

#[cfg(not(feature = "metal"))]
fn open_metal() -> Result<Device> {
    Err(ComputeDevice::Metal.not_built())
}

impl fmt::Display for ComputeDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComputeDevice::Cpu => write!(f, "cpu"),
            ComputeDevice::Vulkan(n) => write!(f, "vulkan:{n}"),
            ComputeDevice::Cuda(n) => write!(f, "cuda:{n}"),
            ComputeDevice::Metal => write!(f, "metal"),
        }
    }
}

impl FromStr for ComputeDevice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (name, index) = match s.trim().split_once(':') {
            Some((name, i)) => {
                let i = i.parse::<usize>().ok().filter(|&i| i < 64).ok_or_else(|| {
                    format!("device '{s}': the index after ':' must be a number 0-63")
                })?;
                (name, Some(i))
            }
            None => (s.trim(), None),
        };
        match (name.to_ascii_lowercase().as_str(), index) {
            ("cpu", None) => Ok(ComputeDevice::Cpu),
            ("vulkan", i) => Ok(ComputeDevice::Vulkan(i.unwrap_or(0))),
            ("cuda", i) => Ok(ComputeDevice::Cuda(i.unwrap_or(0))),
            ("metal", None) => Ok(ComputeDevice::Metal),
            _ => Err(format!(
                "unknown device '{s}': expected cpu, vulkan[:N], cuda[:N] or metal"
            )),
        }
    }
}

impl From<ComputeDevice> for String {
    fn from(d: ComputeDevice) -> String {
        d.to_string()
    }
}

impl TryFrom<String> for ComputeDevice {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

/// The devices of a training run: one replica on each (at least one, made only through
/// [`Devices::new`]; the first holds the model between steps and runs validation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Devices(Vec<ComputeDevice>);

/// At most this many replicas.
pub const MAX_REPLICAS: usize = 16;

impl Devices {
    /// Checked: one to [`MAX_REPLICAS`] devices, all of one kind of backend (the CPU, or GPUs
    /// of one backend), since a step's gradients are added on the first.
    pub fn new(list: Vec<ComputeDevice>) -> std::result::Result<Devices, String> {
        if list.is_empty() || list.len() > MAX_REPLICAS {
            return Err(format!(
                "give 1 to {MAX_REPLICAS} devices, not {}",
                list.len()
            ));
        }
        if list.iter().any(|d| d.feature() != list[0].feature()) {
            return Err(format!(
                "the devices {} mix backends; give devices of one backend",
                Devices(list)
            ));
        }
        Ok(Devices(list))
    }

    /// The first device (where the model lives between steps).
    pub fn main(&self) -> ComputeDevice {
        self.0[0]
    }

    pub fn list(&self) -> &[ComputeDevice] {
        &self.0
    }

    /// Every device opened, in order.
    pub fn open(&self) -> Result<Vec<Device>> {
        self.0.iter().map(|d| d.open()).collect()
    }
}

impl Default for Devices {
    fn default() -> Self {
        Devices(vec![ComputeDevice::Cpu])
    }
}

impl From<ComputeDevice> for Devices {
    fn from(d: ComputeDevice) -> Self {
        Devices(vec![d])
    }
}

impl fmt::Display for Devices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.0.iter().map(|d| d.to_string()).collect();
        write!(f, "{}", names.join(","))
    }
}

impl FromStr for Devices {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let list = s
            .split(',')
            .map(str::parse)
            .collect::<std::result::Result<Vec<ComputeDevice>, String>>()?;
        Devices::new(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for (s, d) in [
            ("cpu", ComputeDevice::Cpu),
            ("vulkan", ComputeDevice::Vulkan(0)),
            ("vulkan:1", ComputeDevice::Vulkan(1)),
            ("CUDA:3", ComputeDevice::Cuda(3)),
            ("metal", ComputeDevice::Metal),
        ] {
            let parsed: ComputeDevice = s.parse().expect(s);
            assert_eq!(parsed, d);
            assert_eq!(parsed.to_string().parse::<ComputeDevice>(), Ok(d));
        }
        for bad in [
            "gpu",
            "cpu:0",
            "vulkan:x",
            "cuda:-1",
            "vulkan:99",
            "metal:1",
            "",
        ] {
            assert!(bad.parse::<ComputeDevice>().is_err(), "{bad}");
        }
        let two: Devices = "vulkan:0,vulkan:1".parse().expect("two");
        assert_eq!(two.list().len(), 2);
        assert_eq!(two.to_string(), "vulkan:0,vulkan:1");
        assert!("cpu,vulkan".parse::<Devices>().is_err(), "mixed backends");
        assert!("cpu,".parse::<Devices>().is_err());
        assert_eq!(
            serde_json::to_string(&ComputeDevice::Cuda(1)).expect("json"),
            "\"cuda:1\""
        );
    }

    /// Without its cargo feature, a GPU device is a clear error naming the feature, not a
    /// panic (CI also runs the binary built *with* `vulkan` on a machine without a GPU).
    #[test]
    fn a_gpu_backend_not_built_in_is_refused_with_the_feature_named() {
        for d in [
            ComputeDevice::Vulkan(0),
            ComputeDevice::Cuda(0),
            ComputeDevice::Metal,
        ] {
            let feature = d.feature().expect("a GPU");
            let built = match feature {
                "vulkan" => cfg!(feature = "vulkan"),
                "cuda" => cfg!(feature = "cuda"),
                _ => cfg!(feature = "metal"),
            };
            if built {
                continue;
            }
            let e = d.open().expect_err("not built").to_string();
            assert!(e.contains(&format!("--features {feature}")), "{e}");
            assert!(e.contains(&d.to_string()), "{e}");
        }
        assert!(ComputeDevice::Cpu.open().is_ok());
    }
}

//! The device, its queue, the cached pipelines, buffers and asynchronous readback.

use crate::tensor::Tensor;
use crate::{Error, Result};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use wgpu::util::DeviceExt;

/// The largest workgroup count per dispatch dimension WebGPU guarantees.
const MAX_GROUPS: u32 = 65_535;

/// The adapter a [`GpuContext`] runs on, as the UI and the JS API show it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AdapterSummary {
    /// Adapter name (`llvmpipe (LLVM 15.0.6, 256 bits)`, `SwiftShader Device …`).
    pub name: String,
    /// Backend (`Vulkan`, `BrowserWebGpu`).
    pub backend: String,
    /// Whether this is a software (CPU-emulated) adapter: lavapipe, SwiftShader.
    pub is_fallback: bool,
    /// Driver name and version where the platform tells them.
    pub driver: String,
}

/// Every kernel the backend launches: its shader source and entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    Matmul,
    Conv2d,
    Int8Matmul,
    Unary,
    Binary,
    Pool,
}

impl Kernel {
    const ALL: usize = 6;

    fn index(self) -> usize {
        self as usize
    }

    fn source(self) -> (&'static str, &'static str) {
        match self {
            Kernel::Matmul => (super::matmul::WGSL, "main"),
            Kernel::Conv2d => (super::conv2d::WGSL, "main"),
            Kernel::Int8Matmul => (super::int8_matmul::WGSL, "main"),
            Kernel::Unary => (super::elementwise::WGSL, "unary"),
            Kernel::Binary => (super::elementwise::WGSL, "binary"),
            Kernel::Pool => (super::pool::WGSL, "main"),
        }
    }

    /// The first binding number of the entry point (entry points sharing a file use
    /// disjoint bindings).
    fn first_binding(self) -> u32 {
        match self {
            Kernel::Binary => 3,
            _ => 0,
        }
    }
}

/// An f32 tensor resident in a GPU storage buffer (row-major). Cloning shares the buffer.
#[derive(Clone, Debug)]
pub struct GpuTensor {
    pub(crate) buffer: wgpu::Buffer,
    pub(crate) shape: Vec<usize>,
}

impl GpuTensor {
    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same buffer seen with another shape of equal element count (Reshape, Flatten).
    pub(crate) fn reshaped(&self, shape: Vec<usize>) -> GpuTensor {
        GpuTensor {
            buffer: self.buffer.clone(),
            shape,
        }
    }
}

/// The device, the queue and the compute pipelines, created once per page or process.
pub struct GpuContext {
    adapter: AdapterSummary,
    device: wgpu::Device,
    queue: wgpu::Queue,
    pipelines: [OnceLock<wgpu::ComputePipeline>; Kernel::ALL],
    /// The first error the device reported outside any scope (validation, out of memory).
    failure: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.adapter)
            .finish_non_exhaustive()
    }
}

fn gpu_err(msg: impl Into<String>) -> Error {
    Error::Gpu(msg.into())
}

/// In the browser: whether `navigator.gpu` exists, checked before wgpu touches it (Node and
/// browsers without WebGPU have none).
#[cfg(target_arch = "wasm32")]
fn browser_has_webgpu() -> Result<()> {
    use wgpu::web_sys::js_sys::{self, Reflect};
    let nav = Reflect::get(&js_sys::global(), &"navigator".into()).unwrap_or_default();
    if nav.is_undefined() || nav.is_null() {
        return Err(gpu_err("no WebGPU adapter (navigator.gpu missing)"));
    }
    let gpu = Reflect::get(&nav, &"gpu".into()).unwrap_or_default();
    if gpu.is_undefined() || gpu.is_null() {
        return Err(gpu_err("no WebGPU adapter (navigator.gpu missing)"));
    }
    Ok(())
}

/// In the browser: a readable adapter name from `GPUAdapter.info` (wgpu passes on only its
/// `description`, which Chromium leaves empty), e.g. `google swiftshader`.
#[cfg(target_arch = "wasm32")]
async fn browser_adapter_name() -> Option<String> {
    use std::cell::RefCell;
    use std::rc::Rc;
    use wgpu::web_sys::js_sys::{self, Function, Promise, Reflect};
    use wgpu::web_sys::wasm_bindgen::{JsCast, JsValue, closure::Closure};
    let get = |v: &JsValue, k: &str| Reflect::get(v, &k.into()).ok();
    let gpu = get(&js_sys::global(), "navigator").and_then(|n| get(&n, "gpu"))?;
    let request: Function = get(&gpu, "requestAdapter")?.dyn_into().ok()?;
    let promise: Promise = request.call0(&gpu).ok()?.dyn_into().ok()?;
    let (tx, rx) = oneshot::<Option<JsValue>>();
    let tx = Rc::new(RefCell::new(Some(tx)));
    let (t1, t2) = (tx.clone(), tx);
    let ok = Closure::once(move |v: JsValue| {
        if let Some(s) = t1.borrow_mut().take() {
            s.send(Some(v));
        }
    });
    let err = Closure::once(move |_: JsValue| {
        if let Some(s) = t2.borrow_mut().take() {
            s.send(None);
        }
    });
    let _ = promise.then2(&ok, &err);
    let adapter = rx.await.flatten()?;
    let info = get(&adapter, "info")?;
    let field = |k: &str| {
        get(&info, k)
            .and_then(|v| v.as_string())
            .unwrap_or_default()
    };
    let description = field("description");
    let name = if description.is_empty() {
        [field("vendor"), field("architecture"), field("device")]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        description
    };
    (!name.is_empty()).then_some(name)
}

impl GpuContext {
    /// Finds an adapter and opens a device on it. Fails with [`Error::Gpu`] (code `gpu`) when
    /// there is none: no `navigator.gpu` in the browser, no Vulkan driver natively.
    pub async fn new() -> Result<GpuContext> {
        #[cfg(target_arch = "wasm32")]
        browser_has_webgpu()?;
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| gpu_err(format!("no WebGPU adapter ({e})")))?;
        #[allow(unused_mut)]
        let mut info = adapter.get_info();
        #[cfg(target_arch = "wasm32")]
        if info.name.is_empty() {
            info.name = browser_adapter_name()
                .await
                .unwrap_or_else(|| "WebGPU adapter".into());
        }
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("lithe"),
                required_limits: adapter.limits(),
                ..Default::default()
            })
            .await
            .map_err(|e| gpu_err(format!("cannot open the GPU device: {e}")))?;
        let failure = Arc::new(Mutex::new(None::<String>));
        let slot = failure.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
            if s.is_none() {
                *s = Some(e.to_string());
            }
        }));
        Ok(GpuContext {
            adapter: AdapterSummary {
                name: info.name.clone(),
                backend: format!("{:?}", info.backend),
                is_fallback: info.device_type == wgpu::DeviceType::Cpu,
                driver: format!("{} {}", info.driver, info.driver_info)
                    .trim()
                    .to_string(),
            },
            device,
            queue,
            pipelines: Default::default(),
            failure,
        })
    }

    /// The adapter this context runs on.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.adapter
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// Fails with the first error the device reported, if any.
    pub(crate) fn check(&self) -> Result<()> {
        let s = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        match &*s {
            Some(e) => Err(gpu_err(format!("the GPU reported an error: {e}"))),
            None => Ok(()),
        }
    }

    /// The pipeline of `k`, compiled on first use.
    fn pipeline(&self, k: Kernel) -> &wgpu::ComputePipeline {
        self.pipelines[k.index()].get_or_init(|| {
            let (src, entry) = k.source();
            let module = self
                .device
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(entry),
                    source: wgpu::ShaderSource::Wgsl(src.into()),
                });
            self.device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(entry),
                    layout: None,
                    module: &module,
                    entry_point: Some(entry),
                    compilation_options: Default::default(),
                    cache: None,
                })
        })
    }

    fn check_bytes(&self, bytes: u64, what: &str) -> Result<()> {
        let lim = self.device.limits();
        let max = lim.max_storage_buffer_binding_size.min(lim.max_buffer_size);
        if bytes > max {
            return Err(gpu_err(format!(
                "{what} needs a buffer of {bytes} bytes; this GPU allows {max}"
            )));
        }
        Ok(())
    }

    /// A storage buffer holding `bytes` (at least 4 bytes: WebGPU binds no empty buffer).
    pub(crate) fn storage_init(&self, bytes: &[u8], what: &str) -> Result<wgpu::Buffer> {
        self.check_bytes(bytes.len() as u64, what)?;
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        let contents: std::borrow::Cow<[u8]> = if bytes.len() < 4 {
            let mut v = bytes.to_vec();
            v.resize(4, 0);
            v.into()
        } else {
            bytes.into()
        };
        Ok(self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(what),
                contents: &contents,
                usage,
            }))
    }

    /// An uninitialised storage buffer of `words` 4-byte elements (at least one).
    pub(crate) fn storage(&self, words: usize, what: &str) -> Result<wgpu::Buffer> {
        let bytes = (words.max(1) as u64)
            .checked_mul(4)
            .ok_or_else(|| gpu_err(format!("{what} is too large")))?;
        self.check_bytes(bytes, what)?;
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }))
    }

    /// An output tensor of `shape`, uninitialised.
    pub(crate) fn alloc(&self, shape: Vec<usize>, what: &str) -> Result<GpuTensor> {
        let n = crate::tensor::checked_numel(&shape)?;
        Ok(GpuTensor {
            buffer: self.storage(n, what)?,
            shape,
        })
    }

    /// Copies f32 values with `shape` into a new device buffer.
    pub fn upload(&self, shape: &[usize], data: &[f32]) -> Result<GpuTensor> {
        let n = crate::tensor::checked_numel(shape)?;
        if n != data.len() {
            return Err(Error::Invalid(format!(
                "shape {shape:?} needs {n} values, got {}",
                data.len()
            )));
        }
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        Ok(GpuTensor {
            buffer: self.storage_init(&bytes, "tensor")?,
            shape: shape.to_vec(),
        })
    }

    /// Copies a host tensor into a new device buffer.
    pub fn upload_tensor(&self, t: &Tensor) -> Result<GpuTensor> {
        let data = crate::tensor::to_contiguous(t);
        self.upload(t.shape(), &data)
    }

    /// Reads a tensor back (asynchronously: never blocks the browser's thread).
    pub async fn download(&self, t: &GpuTensor) -> Result<Tensor> {
        let n = t.len();
        let bytes = self.read_bytes(&t.buffer, n as u64 * 4).await?;
        let data = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        crate::tensor::from_vec(&t.shape, data)
    }

    /// Reads the first `len` bytes of a storage buffer through a mappable staging copy.
    pub(crate) async fn read_bytes(&self, buffer: &wgpu::Buffer, len: u64) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: len,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, len);
        self.queue.submit([enc.finish()]);
        let (tx, rx) = oneshot();
        staging.map_async(wgpu::MapMode::Read, .., move |r| tx.send(r));
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| gpu_err(format!("waiting for the GPU failed: {e}")))?;
        rx.await
            .ok_or_else(|| gpu_err("the GPU dropped a readback"))?
            .map_err(|e| gpu_err(format!("cannot read the GPU result back: {e}")))?;
        let out = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| gpu_err(format!("cannot read the GPU result back: {e}")))?;
            view.to_vec()
        };
        staging.unmap();
        self.check()?;
        Ok(out)
    }

    /// Runs kernel `k` once: binds `buffers` at bindings 0.. and `params` (u32 words, f32 as
    /// bits) as a uniform after them, dispatches `groups` workgroups and submits.
    pub(crate) fn dispatch(
        &self,
        k: Kernel,
        buffers: &[&wgpu::Buffer],
        params: &[u32],
        groups: [u32; 3],
    ) -> Result<()> {
        if groups.contains(&0) {
            return Ok(());
        }
        if groups.iter().any(|&g| g > MAX_GROUPS) {
            return Err(gpu_err(format!(
                "the problem is too large for one dispatch ({groups:?} workgroups)"
            )));
        }
        let mut words = params.to_vec();
        words.resize(params.len().div_ceil(4).max(1) * 4, 0);
        let bytes: Vec<u8> = words.iter().flat_map(|v| v.to_le_bytes()).collect();
        let uniform = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: &bytes,
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let pipeline = self.pipeline(k);
        let mut entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: k.first_binding() + i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        entries.push(wgpu::BindGroupEntry {
            binding: k.first_binding() + buffers.len() as u32,
            resource: uniform.as_entire_binding(),
        });
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        }
        self.queue.submit([enc.finish()]);
        self.check()
    }
}

/// Workgroups covering `total` invocations of `size` threads each, spread over x and y (the
/// shader rebuilds the flat index from `num_workgroups`).
pub(crate) fn grid_1d(total: usize, size: u32) -> Result<[u32; 3]> {
    let groups = total.div_ceil(size as usize);
    if groups == 0 {
        return Ok([0, 1, 1]);
    }
    let x = groups.min(MAX_GROUPS as usize);
    let y = groups.div_ceil(x);
    if y > MAX_GROUPS as usize {
        return Err(gpu_err(format!(
            "{total} elements are too many for one dispatch"
        )));
    }
    Ok([x as u32, y as u32, 1])
}

/// Converts a size to the u32 a shader reads, or fails clearly.
pub(crate) fn u32_of(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| gpu_err(format!("{what} = {v} does not fit the GPU kernels")))
}

struct Slot<T> {
    value: Option<T>,
    closed: bool,
    waker: Option<Waker>,
}

struct Sender<T>(Arc<Mutex<Slot<T>>>);
struct Receiver<T>(Arc<Mutex<Slot<T>>>);

/// A one-value channel whose receiver is a future (the `map_async` callback fills it).
fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let s = Arc::new(Mutex::new(Slot {
        value: None,
        closed: false,
        waker: None,
    }));
    (Sender(s.clone()), Receiver(s))
}

impl<T> Sender<T> {
    fn send(self, v: T) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.value = Some(v);
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.closed = true;
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Option<T>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = s.value.take() {
            return Poll::Ready(Some(v));
        }
        if s.closed {
            return Poll::Ready(None);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

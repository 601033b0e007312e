//! The driver API: `extern "C"` functions with the names cudarc 0.19 looks up in libcuda.
//!
//! - `state`: the device (memory, modules, streams and their deferred work, events);
//! - `code`: CUresult codes and fault reporting;
//! - `api_device`, `api_memory`, `api_stream`, `api_module`: the entry points, by family;
//! - every other driver symbol cudarc knows is a generated stub that names itself on stderr and
//!   returns `CUDA_ERROR_NOT_SUPPORTED` (`build.rs`, from `driver_symbols.txt`).

pub mod api_device;
pub mod api_memory;
pub mod api_module;
pub mod api_stream;
pub mod code;
pub mod state;

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use code::Code;
use state::Device;

pub type CUresult = u32;
pub type CUdeviceptr = u64;

static DEVICE: Mutex<Option<Device>> = Mutex::new(None);
static INITIALIZED: AtomicBool = AtomicBool::new(false);

/// The handle of the one (primary) context of device 0.
pub const PRIMARY_CONTEXT: usize = 0xC0DE_0000;

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

pub fn current_context() -> usize {
    CURRENT.with(|c| c.get())
}

pub fn set_current_context(ctx: usize) {
    CURRENT.with(|c| c.set(ctx));
}

fn result(r: Result<(), Code>) -> CUresult {
    match r {
        Ok(()) => Code::Success as u32,
        Err(c) => c as u32,
    }
}

/// Runs `f` on the device after `cuInit`; a panic inside becomes `CUDA_ERROR_UNKNOWN`.
pub fn with_device(f: impl FnOnce(&mut Device) -> Result<(), Code>) -> CUresult {
    if !INITIALIZED.load(Ordering::Acquire) {
        return Code::NotInitialized as u32;
    }
    let run = std::panic::AssertUnwindSafe(|| {
        let mut guard = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
        let dev = guard.get_or_insert_with(Device::from_env);
        f(dev)
    });
    match std::panic::catch_unwind(run) {
        Ok(r) => result(r),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            code::remember(
                Code::Unknown,
                &format!("internal error (a bug in the interpreter): {what}"),
            );
            Code::Unknown as u32
        }
    }
}

/// Like `with_device`, and requires a current context on this thread.
pub fn with_context(f: impl FnOnce(&mut Device) -> Result<(), Code>) -> CUresult {
    if INITIALIZED.load(Ordering::Acquire) && current_context() == 0 {
        return Code::InvalidContext as u32;
    }
    with_device(f)
}

pub fn mark_initialized() {
    INITIALIZED.store(true, Ordering::Release);
}

/// Maps a CUstream handle to the device's stream id: null, CU_STREAM_LEGACY (1) and
/// CU_STREAM_PER_THREAD (2) are the default stream.
pub fn stream_id(handle: usize) -> u64 {
    if handle <= 2 {
        0
    } else {
        handle as u64
    }
}

/// Prints and refuses a driver entry point the stand-in does not implement.
pub fn unsupported(name: &str) -> CUresult {
    eprintln!("gradmask-vgpu: {name} is not implemented by the stand-in driver (CUDA_ERROR_NOT_SUPPORTED)");
    Code::NotSupported as u32
}

mod stubs {
    include!(concat!(env!("OUT_DIR"), "/stubs.rs"));
}

//! Initialisation, the device and its attributes, the primary context, error strings.

#![allow(non_snake_case)]

use std::ffi::{c_char, c_int, c_uint, c_void};

use super::code::Code;
use super::{
    current_context, mark_initialized, set_current_context, with_context, with_device, CUresult,
    PRIMARY_CONTEXT,
};

/// The device's name, as `cuDeviceGetName` gives it.
pub const DEVICE_NAME: &str = "gradmask-vgpu (PTX interpreter, H200-like sm_90)";
/// H200: 141 GB of HBM3e.
pub const TOTAL_MEMORY: usize = 141 * 1024 * 1024 * 1024;

/// H200-like values of the CUdevice_attribute numbers cudarc and callers ask for.
fn attribute(attrib: c_int) -> Option<c_int> {
    Some(match attrib {
        1 => 1024,              // MAX_THREADS_PER_BLOCK
        2 | 3 => 1024,          // MAX_BLOCK_DIM_X, _Y
        4 => 64,                // MAX_BLOCK_DIM_Z
        5 => i32::MAX,          // MAX_GRID_DIM_X
        6 | 7 => 65535,         // MAX_GRID_DIM_Y, _Z
        8 => 48 * 1024,         // MAX_SHARED_MEMORY_PER_BLOCK
        9 => 64 * 1024,         // TOTAL_CONSTANT_MEMORY
        10 => 32,               // WARP_SIZE
        12 => 65536,            // MAX_REGISTERS_PER_BLOCK
        13 => 1_980_000,        // CLOCK_RATE (kHz)
        16 => 132,              // MULTIPROCESSOR_COUNT
        19 => 1,                // CAN_MAP_HOST_MEMORY
        31 => 1,                // CONCURRENT_KERNELS
        36 => 3_201_000,        // MEMORY_CLOCK_RATE (kHz)
        37 => 6144,             // GLOBAL_MEMORY_BUS_WIDTH
        38 => 50 * 1024 * 1024, // L2_CACHE_SIZE
        39 => 2048,             // MAX_THREADS_PER_MULTIPROCESSOR
        40 => 3,                // ASYNC_ENGINE_COUNT
        41 => 1,                // UNIFIED_ADDRESSING
        75 => 9,                // COMPUTE_CAPABILITY_MAJOR
        76 => 0,                // COMPUTE_CAPABILITY_MINOR
        78 => 1,                // STREAM_PRIORITIES_SUPPORTED
        81 => 228 * 1024,       // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
        82 => 65536,            // MAX_REGISTERS_PER_MULTIPROCESSOR
        83 => 1,                // MANAGED_MEMORY
        95 => 1,                // COOPERATIVE_LAUNCH
        97 => 227 * 1024,       // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
        106 => 32,              // MAX_BLOCKS_PER_MULTIPROCESSOR
        111 => 1024,            // RESERVED_SHARED_MEMORY_PER_BLOCK
        115 => 1,               // MEMORY_POOLS_SUPPORTED
        _ => return None,
    })
}

/// # Safety
/// Safe for any flags (non-zero flags are rejected as a real driver does).
#[no_mangle]
pub unsafe extern "C" fn cuInit(flags: c_uint) -> CUresult {
    if flags != 0 {
        return Code::InvalidValue as u32;
    }
    mark_initialized();
    with_device(|_| Ok(()))
}

/// # Safety
/// `version` is null (rejected) or writable.
#[no_mangle]
pub unsafe extern "C" fn cuDriverGetVersion(version: *mut c_int) -> CUresult {
    if version.is_null() {
        return Code::InvalidValue as u32;
    }
    // SAFETY: checked non-null; the caller passes a writable int.
    unsafe { *version = 13000 };
    Code::Success as u32
}

/// # Safety
/// `count` is null (rejected) or writable.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetCount(count: *mut c_int) -> CUresult {
    with_device(|_| {
        if count.is_null() {
            return Err(Code::InvalidValue);
        }
        // SAFETY: checked non-null.
        unsafe { *count = 1 };
        Ok(())
    })
}

/// # Safety
/// `device` is null (rejected) or writable.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGet(device: *mut c_int, ordinal: c_int) -> CUresult {
    with_device(|_| {
        if device.is_null() {
            return Err(Code::InvalidValue);
        }
        if ordinal != 0 {
            return Err(Code::InvalidDevice);
        }
        // SAFETY: checked non-null.
        unsafe { *device = 0 };
        Ok(())
    })
}

/// # Safety
/// `value` is null (rejected) or writable.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetAttribute(
    pi: *mut c_int,
    attrib: c_int,
    device: c_int,
) -> CUresult {
    with_device(|_| {
        if pi.is_null() {
            return Err(Code::InvalidValue);
        }
        if device != 0 {
            return Err(Code::InvalidDevice);
        }
        // SAFETY: checked non-null. Attributes the stand-in does not model read as 0.
        unsafe { *pi = attribute(attrib).unwrap_or(0) };
        Ok(())
    })
}

/// # Safety
/// `name` is null (rejected) or writable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetName(name: *mut c_char, len: c_int, device: c_int) -> CUresult {
    with_device(|_| {
        if name.is_null() || len <= 0 {
            return Err(Code::InvalidValue);
        }
        if device != 0 {
            return Err(Code::InvalidDevice);
        }
        let bytes = DEVICE_NAME.as_bytes();
        let n = bytes.len().min(len as usize - 1);
        // SAFETY: the caller's buffer holds `len` bytes; we write n + 1 <= len.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), name as *mut u8, n);
            *name.add(n) = 0;
        }
        Ok(())
    })
}

/// # Safety
/// `bytes` is null (rejected) or writable.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, device: c_int) -> CUresult {
    with_device(|_| {
        if bytes.is_null() {
            return Err(Code::InvalidValue);
        }
        if device != 0 {
            return Err(Code::InvalidDevice);
        }
        // SAFETY: checked non-null.
        unsafe { *bytes = TOTAL_MEMORY };
        Ok(())
    })
}

/// # Safety
/// `major` and `minor` are null (rejected) or writable.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceComputeCapability(
    major: *mut c_int,
    minor: *mut c_int,
    device: c_int,
) -> CUresult {
    with_device(|_| {
        if major.is_null() || minor.is_null() {
            return Err(Code::InvalidValue);
        }
        if device != 0 {
            return Err(Code::InvalidDevice);
        }
        // SAFETY: checked non-null.
        unsafe {
            *major = 9;
            *minor = 0;
        }
        Ok(())
    })
}

/// # Safety
/// `ctx` is null (rejected) or writable.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(
    ctx: *mut *mut c_void,
    device: c_int,
) -> CUresult {
    with_device(|dev| {
        if ctx.is_null() {
            return Err(Code::InvalidValue);
        }
        if device != 0 {
            return Err(Code::InvalidDevice);
        }
        dev.primary_retains += 1;
        // SAFETY: checked non-null.
        unsafe { *ctx = PRIMARY_CONTEXT as *mut c_void };
        Ok(())
    })
}

/// # Safety
/// Safe for any device number (an unknown one is rejected).
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRelease_v2(device: c_int) -> CUresult {
    with_device(|dev| {
        if device != 0 {
            return Err(Code::InvalidDevice);
        }
        dev.primary_retains = dev
            .primary_retains
            .checked_sub(1)
            .ok_or(Code::InvalidContext)?;
        Ok(())
    })
}

/// # Safety
/// `flags` and `active` are null (rejected) or writable.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxGetState(
    device: c_int,
    flags: *mut c_uint,
    active: *mut c_int,
) -> CUresult {
    with_device(|dev| {
        if flags.is_null() || active.is_null() {
            return Err(Code::InvalidValue);
        }
        if device != 0 {
            return Err(Code::InvalidDevice);
        }
        // SAFETY: checked non-null.
        unsafe {
            *flags = 0;
            *active = c_int::from(dev.primary_retains > 0);
        }
        Ok(())
    })
}

/// # Safety
/// `ctx` is null (rejected) or writable.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetCurrent(ctx: *mut *mut c_void) -> CUresult {
    with_device(|_| {
        if ctx.is_null() {
            return Err(Code::InvalidValue);
        }
        // SAFETY: checked non-null.
        unsafe { *ctx = current_context() as *mut c_void };
        Ok(())
    })
}

/// # Safety
/// `ctx` is null, the primary context's handle, or rejected; it is compared, never dereferenced.
#[no_mangle]
pub unsafe extern "C" fn cuCtxSetCurrent(ctx: *mut c_void) -> CUresult {
    with_device(|_| {
        let handle = ctx as usize;
        if handle != 0 && handle != PRIMARY_CONTEXT {
            return Err(Code::InvalidContext);
        }
        set_current_context(handle);
        Ok(())
    })
}

/// # Safety
/// As `cuCtxSetCurrent`.
#[no_mangle]
pub unsafe extern "C" fn cuCtxPushCurrent_v2(ctx: *mut c_void) -> CUresult {
    // SAFETY: forwarded; one level of context stack is all the stand-in keeps.
    unsafe { cuCtxSetCurrent(ctx) }
}

/// # Safety
/// `ctx` is null (nothing is written) or writable.
#[no_mangle]
pub unsafe extern "C" fn cuCtxPopCurrent_v2(ctx: *mut *mut c_void) -> CUresult {
    with_context(|_| {
        if !ctx.is_null() {
            // SAFETY: checked non-null.
            unsafe { *ctx = current_context() as *mut c_void };
        }
        set_current_context(0);
        Ok(())
    })
}

/// # Safety
/// `device` is null (rejected) or writable.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetDevice(device: *mut c_int) -> CUresult {
    with_context(|_| {
        if device.is_null() {
            return Err(Code::InvalidValue);
        }
        // SAFETY: checked non-null.
        unsafe { *device = 0 };
        Ok(())
    })
}

/// # Safety
/// Safe: it runs the queued work of the current context.
#[no_mangle]
pub unsafe extern "C" fn cuCtxSynchronize() -> CUresult {
    with_context(|dev| dev.run_all())
}

/// # Safety
/// `out` is null (rejected) or writable; the string written lives as long as the process.
#[no_mangle]
pub unsafe extern "C" fn cuGetErrorString(error: c_uint, out: *mut *const c_char) -> CUresult {
    if out.is_null() {
        return Code::InvalidValue as u32;
    }
    let Some(code) = Code::from_raw(error) else {
        return Code::InvalidValue as u32;
    };
    let text = super::code::detail(error).unwrap_or(code.text().as_ptr() as *const c_char);
    // SAFETY: checked non-null; the strings are static or leaked.
    unsafe { *out = text };
    Code::Success as u32
}

/// # Safety
/// `out` is null (rejected) or writable; the string written lives as long as the process.
#[no_mangle]
pub unsafe extern "C" fn cuGetErrorName(error: c_uint, out: *mut *const c_char) -> CUresult {
    if out.is_null() {
        return Code::InvalidValue as u32;
    }
    let Some(code) = Code::from_raw(error) else {
        return Code::InvalidValue as u32;
    };
    // SAFETY: checked non-null; the names are static NUL-terminated strings.
    unsafe { *out = code.name().as_ptr() as *const c_char };
    Code::Success as u32
}

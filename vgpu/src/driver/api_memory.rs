//! Device memory, pinned host memory, copies and memsets.

#![allow(non_snake_case)]

use std::alloc::Layout;
use std::ffi::{c_uint, c_void};

use super::api_device::TOTAL_MEMORY;
use super::code::Code;
use super::state::{Device, Work};
use super::{stream_id, with_context, CUdeviceptr, CUresult};

/// Checks that `len` bytes at `ptr` lie in one live allocation (0 bytes always do).
fn check_range(dev: &Device, ptr: u64, len: u64) -> Result<(), Code> {
    if len == 0 {
        return Ok(());
    }
    dev.mem.locate(ptr, len).map(|_| ()).map_err(|e| {
        super::code::remember(
            Code::InvalidValue,
            &format!("{len} bytes at device address {ptr:#x}: {e}"),
        );
        Code::InvalidValue
    })
}

fn alloc(dev: &mut Device, dptr: *mut CUdeviceptr, size: usize) -> Result<(), Code> {
    if dptr.is_null() {
        return Err(Code::InvalidValue);
    }
    if dev.mem.bytes_live as usize + size > TOTAL_MEMORY {
        return Err(Code::OutOfMemory);
    }
    let ptr = if size == 0 {
        0
    } else {
        dev.mem.alloc(size as u64)
    };
    // SAFETY: checked non-null; the caller passes a writable CUdeviceptr.
    unsafe { *dptr = ptr };
    Ok(())
}

/// # Safety
/// `dptr` must be null or writable (the driver API contract, as for every entry point here).
#[no_mangle]
pub unsafe extern "C" fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, size: usize) -> CUresult {
    with_context(|dev| alloc(dev, dptr, size))
}

/// # Safety
/// As `cuMemAlloc_v2`. The allocation is usable at once; its contents are uninitialised.
#[no_mangle]
pub unsafe extern "C" fn cuMemAllocAsync(
    dptr: *mut CUdeviceptr,
    size: usize,
    stream: *mut c_void,
) -> CUresult {
    with_context(|dev| {
        dev.streams
            .get(&stream_id(stream as usize))
            .ok_or(Code::InvalidHandle)?;
        alloc(dev, dptr, size)
    })
}

/// # Safety
/// None beyond the driver API's: `ptr` is a device address.
#[no_mangle]
pub unsafe extern "C" fn cuMemFree_v2(ptr: CUdeviceptr) -> CUresult {
    with_context(|dev| {
        if ptr == 0 {
            return Ok(());
        }
        // cuMemFree synchronises: queued work may still use the memory.
        dev.run_all()?;
        dev.mem.free(ptr).map_err(|e| {
            super::code::remember(Code::InvalidValue, &format!("cuMemFree({ptr:#x}): {e}"));
            Code::InvalidValue
        })
    })
}

/// # Safety
/// None beyond the driver API's.
#[no_mangle]
pub unsafe extern "C" fn cuMemFreeAsync(ptr: CUdeviceptr, stream: *mut c_void) -> CUresult {
    with_context(|dev| {
        if ptr == 0 {
            return Ok(());
        }
        if dev.mem.range_of(ptr).is_none_or(|(base, _)| base != ptr) {
            super::code::remember(
                Code::InvalidValue,
                &format!("cuMemFreeAsync({ptr:#x}): not the start of a live allocation"),
            );
            return Err(Code::InvalidValue);
        }
        dev.enqueue(stream_id(stream as usize), Work::Free { ptr })
    })
}

/// # Safety
/// `free` and `total` must be writable.
#[no_mangle]
pub unsafe extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult {
    with_context(|dev| {
        if free.is_null() || total.is_null() {
            return Err(Code::InvalidValue);
        }
        // SAFETY: checked non-null.
        unsafe {
            *free = TOTAL_MEMORY - dev.mem.bytes_live as usize;
            *total = TOTAL_MEMORY;
        }
        Ok(())
    })
}

fn host_layout(size: usize) -> Option<Layout> {
    Layout::from_size_align(size.max(1), 4096).ok()
}

/// # Safety
/// `pp` must be writable. The buffer is page-aligned host memory, freed by `cuMemFreeHost`.
#[no_mangle]
pub unsafe extern "C" fn cuMemHostAlloc(
    pp: *mut *mut c_void,
    size: usize,
    _flags: c_uint,
) -> CUresult {
    with_context(|dev| {
        if pp.is_null() || size == 0 {
            return Err(Code::InvalidValue);
        }
        let layout = host_layout(size).ok_or(Code::InvalidValue)?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            return Err(Code::OutOfMemory);
        }
        dev.pinned.insert(ptr as usize, size);
        // SAFETY: checked non-null.
        unsafe { *pp = ptr as *mut c_void };
        Ok(())
    })
}

/// # Safety
/// As `cuMemHostAlloc`.
#[no_mangle]
pub unsafe extern "C" fn cuMemAllocHost_v2(pp: *mut *mut c_void, size: usize) -> CUresult {
    // SAFETY: forwarded with the same contract.
    unsafe { cuMemHostAlloc(pp, size, 0) }
}

/// # Safety
/// `ptr` must come from `cuMemHostAlloc` and not be used after this call.
#[no_mangle]
pub unsafe extern "C" fn cuMemFreeHost(ptr: *mut c_void) -> CUresult {
    with_context(|dev| {
        let size = *dev.pinned.get(&(ptr as usize)).ok_or(Code::InvalidValue)?;
        dev.run_all()?;
        dev.pinned.remove(&(ptr as usize));
        // SAFETY: allocated by cuMemHostAlloc with this layout; no queued copy uses it any more.
        unsafe { std::alloc::dealloc(ptr as *mut u8, host_layout(size).unwrap()) };
        Ok(())
    })
}

fn htod(
    dev: &mut Device,
    dst: u64,
    src: *const c_void,
    len: usize,
    stream: u64,
    sync: bool,
) -> Result<(), Code> {
    if len == 0 {
        return Ok(());
    }
    if src.is_null() {
        return Err(Code::InvalidValue);
    }
    check_range(dev, dst, len as u64)?;
    let work = if dev.is_pinned(src as usize, len) && !sync {
        Work::HtoDPinned {
            dst,
            src: src as usize,
            len,
        }
    } else {
        // SAFETY: the caller's source holds `len` readable bytes for the duration of the call.
        let bytes = unsafe { std::slice::from_raw_parts(src as *const u8, len) }.to_vec();
        Work::HtoDBytes { dst, bytes }
    };
    dev.enqueue(stream, work)?;
    if sync {
        let upto = dev.streams[&stream].enqueued;
        dev.run_stream(stream, upto)?;
    }
    Ok(())
}

fn dtoh(
    dev: &mut Device,
    dst: *mut c_void,
    src: u64,
    len: usize,
    stream: u64,
    sync: bool,
) -> Result<(), Code> {
    if len == 0 {
        return Ok(());
    }
    if dst.is_null() {
        return Err(Code::InvalidValue);
    }
    check_range(dev, src, len as u64)?;
    let pinned = dev.is_pinned(dst as usize, len);
    dev.enqueue(
        stream,
        Work::DtoH {
            dst: dst as usize,
            src,
            len,
        },
    )?;
    // Into pageable memory the copy completes before the call returns, as on a GPU.
    if sync || !pinned {
        let upto = dev.streams[&stream].enqueued;
        dev.run_stream(stream, upto)?;
    }
    Ok(())
}

/// # Safety
/// `src` must hold `len` readable bytes (pinned ones until the copy has run on the stream).
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoDAsync_v2(
    dst: CUdeviceptr,
    src: *const c_void,
    len: usize,
    stream: *mut c_void,
) -> CUresult {
    with_context(|dev| htod(dev, dst, src, len, stream_id(stream as usize), false))
}

/// # Safety
/// `src` must hold `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoD_v2(
    dst: CUdeviceptr,
    src: *const c_void,
    len: usize,
) -> CUresult {
    with_context(|dev| htod(dev, dst, src, len, 0, true))
}

/// # Safety
/// `dst` must hold `len` writable bytes (pinned ones until the copy has run on the stream).
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoHAsync_v2(
    dst: *mut c_void,
    src: CUdeviceptr,
    len: usize,
    stream: *mut c_void,
) -> CUresult {
    with_context(|dev| dtoh(dev, dst, src, len, stream_id(stream as usize), false))
}

/// # Safety
/// `dst` must hold `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoH_v2(
    dst: *mut c_void,
    src: CUdeviceptr,
    len: usize,
) -> CUresult {
    with_context(|dev| dtoh(dev, dst, src, len, 0, true))
}

fn dtod(
    dev: &mut Device,
    dst: u64,
    src: u64,
    len: usize,
    stream: u64,
    sync: bool,
) -> Result<(), Code> {
    check_range(dev, src, len as u64)?;
    check_range(dev, dst, len as u64)?;
    if len == 0 {
        return Ok(());
    }
    dev.enqueue(
        stream,
        Work::DtoD {
            dst,
            src,
            len: len as u64,
        },
    )?;
    if sync {
        let upto = dev.streams[&stream].enqueued;
        dev.run_stream(stream, upto)?;
    }
    Ok(())
}

/// # Safety
/// None beyond the driver API's.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoDAsync_v2(
    dst: CUdeviceptr,
    src: CUdeviceptr,
    len: usize,
    stream: *mut c_void,
) -> CUresult {
    with_context(|dev| dtod(dev, dst, src, len, stream_id(stream as usize), false))
}

/// # Safety
/// None beyond the driver API's.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoD_v2(
    dst: CUdeviceptr,
    src: CUdeviceptr,
    len: usize,
) -> CUresult {
    with_context(|dev| dtod(dev, dst, src, len, 0, true))
}

fn memset(
    dev: &mut Device,
    dst: u64,
    value: u32,
    elem: u8,
    count: usize,
    stream: u64,
    sync: bool,
) -> Result<(), Code> {
    if count == 0 {
        return Ok(());
    }
    if !dst.is_multiple_of(elem as u64) {
        return Err(Code::InvalidValue);
    }
    check_range(dev, dst, count as u64 * elem as u64)?;
    dev.enqueue(
        stream,
        Work::Memset {
            dst,
            value,
            elem,
            count: count as u64,
        },
    )?;
    if sync {
        let upto = dev.streams[&stream].enqueued;
        dev.run_stream(stream, upto)?;
    }
    Ok(())
}

/// # Safety
/// None beyond the driver API's.
#[no_mangle]
pub unsafe extern "C" fn cuMemsetD8Async(
    dst: CUdeviceptr,
    value: u8,
    count: usize,
    stream: *mut c_void,
) -> CUresult {
    with_context(|dev| {
        memset(
            dev,
            dst,
            value as u32,
            1,
            count,
            stream_id(stream as usize),
            false,
        )
    })
}

/// # Safety
/// None beyond the driver API's.
#[no_mangle]
pub unsafe extern "C" fn cuMemsetD8_v2(dst: CUdeviceptr, value: u8, count: usize) -> CUresult {
    with_context(|dev| memset(dev, dst, value as u32, 1, count, 0, true))
}

/// # Safety
/// None beyond the driver API's.
#[no_mangle]
pub unsafe extern "C" fn cuMemsetD16Async(
    dst: CUdeviceptr,
    value: u16,
    count: usize,
    stream: *mut c_void,
) -> CUresult {
    with_context(|dev| {
        memset(
            dev,
            dst,
            value as u32,
            2,
            count,
            stream_id(stream as usize),
            false,
        )
    })
}

/// # Safety
/// None beyond the driver API's.
#[no_mangle]
pub unsafe extern "C" fn cuMemsetD32Async(
    dst: CUdeviceptr,
    value: c_uint,
    count: usize,
    stream: *mut c_void,
) -> CUresult {
    with_context(|dev| memset(dev, dst, value, 4, count, stream_id(stream as usize), false))
}

/// # Safety
/// None beyond the driver API's.
#[no_mangle]
pub unsafe extern "C" fn cuMemsetD32_v2(dst: CUdeviceptr, value: c_uint, count: usize) -> CUresult {
    with_context(|dev| memset(dev, dst, value, 4, count, 0, true))
}

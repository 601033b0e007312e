//! Modules (fatbin or PTX images, parsed once per text), functions and kernel launches.

#![allow(non_snake_case)]

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::Arc;

use super::code::{remember, Code};
use super::state::Work;
use super::{stream_id, with_context, CUresult};
use crate::fatbin;
use crate::ptx;

/// The PTX text of a module image: a fatbin, a fatbin wrapper, or NUL-terminated PTX.
///
/// # Safety
/// `image` must point at a complete image of one of those kinds.
unsafe fn image_ptx(image: *const c_void) -> Result<String, (Code, String)> {
    const WRAPPER_MAGIC: u32 = 0x466243b1;
    let bytes = image as *const u8;
    // SAFETY: every image kind starts with at least 16 readable bytes.
    let head = unsafe { std::slice::from_raw_parts(bytes, 16) };
    if u32::from_le_bytes(head[0..4].try_into().unwrap()) == WRAPPER_MAGIC {
        let inner = u64::from_le_bytes(head[8..16].try_into().unwrap()) as *const c_void;
        // SAFETY: a fatbin wrapper points at its fatbin.
        return unsafe { image_ptx(inner) };
    }
    if fatbin::is_fatbin(head) {
        let size = fatbin::size_from_header(head)
            .ok_or((Code::InvalidImage, "bad fatbin header".into()))?;
        // SAFETY: the fatbin's header gives its size.
        let all = unsafe { std::slice::from_raw_parts(bytes, size) };
        let texts = fatbin::ptx_texts(all).map_err(|e| (Code::InvalidImage, e))?;
        return texts.into_iter().last().ok_or((
            Code::NoBinaryForGpu,
            "the fatbin has no PTX (only SASS, which the interpreter cannot run)".into(),
        ));
    }
    if head.starts_with(b"\x7fELF") {
        return Err((
            Code::NoBinaryForGpu,
            "a cubin (SASS) image; the interpreter runs PTX only".into(),
        ));
    }
    // SAFETY: otherwise the image is NUL-terminated PTX text.
    let text = unsafe { CStr::from_ptr(image as *const c_char) };
    Ok(text.to_string_lossy().into_owned())
}

/// # Safety
/// `module` must be writable and `image` a complete fatbin or NUL-terminated PTX.
#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadData(
    module: *mut *mut c_void,
    image: *const c_void,
) -> CUresult {
    with_context(|dev| {
        if module.is_null() || image.is_null() {
            return Err(Code::InvalidValue);
        }
        // SAFETY: the caller's contract above.
        let ptx_text = unsafe { image_ptx(image) }.map_err(|(code, why)| {
            remember(code, &format!("cuModuleLoadData: {why}"));
            code
        })?;
        let key = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            ptx_text.hash(&mut h);
            h.finish()
        };
        let parsed = match dev.parsed.get(&key) {
            Some(m) => m.clone(),
            None => {
                let m = Arc::new(ptx::parse_lenient(&ptx_text).map_err(|e| {
                    let why = format!("cuModuleLoadData: cannot run this PTX: {e}");
                    remember(Code::InvalidPtx, &why);
                    Code::InvalidPtx
                })?);
                dev.parsed.insert(key, m.clone());
                m
            }
        };
        let id = dev.handle();
        dev.modules.insert(id, parsed);
        // SAFETY: checked non-null.
        unsafe { *module = id as *mut c_void };
        Ok(())
    })
}

/// # Safety
/// As `cuModuleLoadData`; JIT options are ignored.
#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadDataEx(
    module: *mut *mut c_void,
    image: *const c_void,
    _n: c_uint,
    _options: *mut c_void,
    _values: *mut *mut c_void,
) -> CUresult {
    // SAFETY: forwarded with the same contract.
    unsafe { cuModuleLoadData(module, image) }
}

/// # Safety
/// `out` must be writable and `name` a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn cuModuleGetFunction(
    out: *mut *mut c_void,
    module: *mut c_void,
    name: *const c_char,
) -> CUresult {
    with_context(|dev| {
        if out.is_null() || name.is_null() {
            return Err(Code::InvalidValue);
        }
        // SAFETY: checked non-null; NUL-terminated by contract.
        let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
        let m = dev
            .modules
            .get(&(module as u64))
            .ok_or(Code::InvalidHandle)?;
        if let Some((_, why)) = m.unloadable.iter().find(|(k, _)| *k == name) {
            // A kernel the lenient load set aside (candle's modules have some).
            eprintln!("gradmask-vgpu: kernel {name} cannot run on the interpreter: {why}");
            return Err(Code::NotSupported);
        }
        let index = m
            .kernels
            .iter()
            .position(|k| k.name == name)
            .ok_or(Code::NotFound)?;
        let id = dev.handle();
        dev.functions.insert(id, (module as u64, index));
        // SAFETY: checked non-null.
        unsafe { *out = id as *mut c_void };
        Ok(())
    })
}

/// # Safety
/// None beyond the driver API's. Queued launches keep their module alive.
#[no_mangle]
pub unsafe extern "C" fn cuModuleUnload(module: *mut c_void) -> CUresult {
    with_context(|dev| {
        dev.modules
            .remove(&(module as u64))
            .ok_or(Code::InvalidHandle)?;
        dev.functions.retain(|_, (m, _)| *m != module as u64);
        Ok(())
    })
}

/// # Safety
/// `pi` must be writable.
#[no_mangle]
pub unsafe extern "C" fn cuFuncGetAttribute(
    pi: *mut c_int,
    attrib: c_int,
    func: *mut c_void,
) -> CUresult {
    with_context(|dev| {
        if pi.is_null() {
            return Err(Code::InvalidValue);
        }
        let &(m, k) = dev
            .functions
            .get(&(func as u64))
            .ok_or(Code::InvalidHandle)?;
        let kernel = &dev.modules[&m].kernels[k];
        let value = match attrib {
            0 => kernel
                .max_ntid
                .map_or(1024, |d| d.iter().product::<u32>() as c_int), // MAX_THREADS_PER_BLOCK
            1 => kernel.shared_bytes as c_int, // SHARED_SIZE_BYTES
            4 => kernel.n_regs.min(255) as c_int, // NUM_REGS
            5 => 90,                           // PTX_VERSION
            6 => 90,                           // BINARY_VERSION
            _ => 0,
        };
        // SAFETY: checked non-null.
        unsafe { *pi = value };
        Ok(())
    })
}

/// # Safety
/// None beyond the driver API's; attributes are accepted and ignored.
#[no_mangle]
pub unsafe extern "C" fn cuFuncSetAttribute(
    func: *mut c_void,
    _attrib: c_int,
    _value: c_int,
) -> CUresult {
    with_context(|dev| {
        dev.functions
            .get(&(func as u64))
            .map(|_| ())
            .ok_or(Code::InvalidHandle)
    })
}

/// Bytes of `extra` in the CU_LAUNCH_PARAM_BUFFER_POINTER / _SIZE form.
///
/// # Safety
/// `extra` is a null-terminated key/value list as the driver API defines it.
unsafe fn extra_buffer(extra: *mut *mut c_void) -> Option<(*const u8, usize)> {
    let (mut ptr, mut size) = (None, None);
    let mut i = 0;
    loop {
        // SAFETY: the list is terminated by CU_LAUNCH_PARAM_END (0).
        let key = unsafe { *extra.add(i) } as usize;
        match key {
            0 => break,
            1 => ptr = Some(unsafe { *extra.add(i + 1) } as *const u8),
            // SAFETY: the value of BUFFER_SIZE points at a size_t.
            2 => size = Some(unsafe { *(*extra.add(i + 1) as *const usize) }),
            _ => return None,
        }
        i += 2;
    }
    Some((ptr?, size?))
}

/// # Safety
/// `params` must point at one pointer per kernel parameter, each to a value of that parameter's
/// size (or `extra` at a parameter buffer), as the driver API defines.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cuLaunchKernel(
    func: *mut c_void,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    shared_bytes: c_uint,
    stream: *mut c_void,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    with_context(|dev| {
        let &(m, k) = dev
            .functions
            .get(&(func as u64))
            .ok_or(Code::InvalidHandle)?;
        let module = dev.modules.get(&m).ok_or(Code::InvalidHandle)?.clone();
        let kernel = &module.kernels[k];
        let bad = |why: String| {
            remember(
                Code::InvalidValue,
                &format!("cuLaunchKernel({}): {why}", kernel.name),
            );
            Code::InvalidValue
        };
        if gx == 0 || gy == 0 || gz == 0 || gx > i32::MAX as u32 || gy > 65535 || gz > 65535 {
            return Err(bad(format!(
                "grid ({gx},{gy},{gz}) is outside the device's limits"
            )));
        }
        let threads = bx as u64 * by as u64 * bz as u64;
        if bx == 0 || by == 0 || bz == 0 || bx > 1024 || by > 1024 || bz > 64 || threads > 1024 {
            return Err(bad(format!(
                "block ({bx},{by},{bz}) is outside the device's limits"
            )));
        }
        if let Some(max) = kernel.max_ntid {
            if threads > max.iter().map(|&d| d as u64).product::<u64>() {
                remember(Code::LaunchOutOfResources, &format!(
                    "cuLaunchKernel({}): {threads} threads per block exceed the kernel's .maxntid {max:?}",
                    kernel.name
                ));
                return Err(Code::LaunchOutOfResources);
            }
        }
        if kernel.shared_bytes as u64 + shared_bytes as u64 > 227 * 1024 {
            return Err(bad(format!(
                "{} bytes of shared memory per block",
                kernel.shared_bytes + shared_bytes
            )));
        }
        let mut buf = vec![0u8; kernel.param_bytes as usize];
        if !params.is_null() {
            for (i, p) in kernel.params.iter().enumerate() {
                // SAFETY: the caller's contract: one pointer per parameter.
                let value = unsafe { *params.add(i) } as *const u8;
                if value.is_null() {
                    return Err(bad(format!("parameter {i} ({}) is a null pointer", p.name)));
                }
                // SAFETY: the pointer addresses a value of the parameter's size.
                let bytes = unsafe { std::slice::from_raw_parts(value, p.size as usize) };
                buf[p.offset as usize..(p.offset + p.size) as usize].copy_from_slice(bytes);
            }
        } else if !extra.is_null() {
            // SAFETY: the caller's contract for `extra`.
            let (ptr, size) =
                unsafe { extra_buffer(extra) }.ok_or_else(|| bad("malformed `extra`".into()))?;
            if size != buf.len() {
                return Err(bad(format!(
                    "the parameter buffer has {size} bytes, the kernel takes {}",
                    buf.len()
                )));
            }
            // SAFETY: the buffer holds `size` bytes.
            buf.copy_from_slice(unsafe { std::slice::from_raw_parts(ptr, size) });
        } else if !kernel.params.is_empty() {
            return Err(bad(format!(
                "no parameters given; the kernel takes {}",
                kernel.params.len()
            )));
        }
        dev.enqueue(
            stream_id(stream as usize),
            Work::Launch {
                module,
                kernel: k,
                grid: [gx, gy, gz],
                block: [bx, by, bz],
                dynamic_shared: shared_bytes,
                params: buf,
            },
        )
    })
}

//! Bad input to the stand-in driver gets the error code a real driver returns, never a crash:
//! null and foreign pointers, unknown and double frees, launches outside the limits or with
//! malformed parameters, PTX it cannot read. Calls the `extern "C"` entry points directly.

use std::ffi::{c_void, CString};
use std::ptr::{null, null_mut};

use gradmask_vgpu::driver::api_device::*;
use gradmask_vgpu::driver::api_memory::*;
use gradmask_vgpu::driver::api_module::*;

const SUCCESS: u32 = 0;
const INVALID_VALUE: u32 = 1;
const INVALID_CONTEXT: u32 = 201;
const INVALID_PTX: u32 = 218;
const INVALID_HANDLE: u32 = 400;
const NOT_FOUND: u32 = 500;
const NOT_SUPPORTED: u32 = 801;

const PTX: &str = ".version 9.0\n.target sm_90\n.address_size 64\n\
    .visible .entry store(.param .u64 out)\n{\n.reg .b64 %rd<3>;\n.reg .b32 %r<2>;\n\
    ld.param.u64 %rd1, [out];\nmov.u32 %r1, %tid.x;\nmul.wide.u32 %rd2, %r1, 4;\nadd.s64 %rd1, %rd1, %rd2;\n\
    st.global.u32 [%rd1], %r1;\nret;\n}\n";

/// Initialises the driver and makes the primary context current on this thread.
fn context() {
    // SAFETY: the pointers are valid locals.
    unsafe {
        assert_eq!(cuInit(0), SUCCESS);
        let mut ctx = null_mut();
        assert_eq!(cuDevicePrimaryCtxRetain(&mut ctx, 0), SUCCESS);
        assert_eq!(cuCtxSetCurrent(ctx), SUCCESS);
    }
}

fn load(ptx: &str) -> (u32, *mut c_void) {
    let text = CString::new(ptx).unwrap();
    let mut module = null_mut();
    // SAFETY: NUL-terminated PTX text and a valid out-pointer.
    let rc = unsafe { cuModuleLoadData(&mut module, text.as_ptr() as *const c_void) };
    (rc, module)
}

#[test]
fn memory_calls_reject_bad_pointers() {
    context();
    // SAFETY: each call gets valid locals or deliberately bad device addresses, which the
    // driver must reject without touching them.
    unsafe {
        assert_eq!(cuMemAlloc_v2(null_mut(), 16), INVALID_VALUE);
        let mut p = 0u64;
        assert_eq!(cuMemAlloc_v2(&mut p, 64), SUCCESS);
        let host = [7u8; 64];
        assert_eq!(
            cuMemcpyHtoD_v2(p, host.as_ptr() as *const c_void, 64),
            SUCCESS
        );
        assert_eq!(
            cuMemcpyHtoD_v2(p, null(), 64),
            INVALID_VALUE,
            "null host pointer"
        );
        assert_eq!(
            cuMemcpyHtoD_v2(p + 8, host.as_ptr() as *const c_void, 64),
            INVALID_VALUE,
            "overrun"
        );
        assert_eq!(
            cuMemcpyHtoD_v2(0xdead_0000, host.as_ptr() as *const c_void, 4),
            INVALID_VALUE,
            "foreign pointer"
        );
        let mut back = [0u8; 64];
        assert_eq!(
            cuMemcpyDtoH_v2(back.as_mut_ptr() as *mut c_void, p, 64),
            SUCCESS
        );
        assert_eq!(back, host);
        assert_eq!(
            cuMemsetD32_v2(p + 2, 0, 4),
            INVALID_VALUE,
            "misaligned memset"
        );
        assert_eq!(cuMemFree_v2(0x1234_5678), INVALID_VALUE, "unknown pointer");
        assert_eq!(cuMemFree_v2(p), SUCCESS);
        assert_eq!(cuMemFree_v2(p), INVALID_VALUE, "double free");
        assert_eq!(
            cuMemcpyDtoH_v2(back.as_mut_ptr() as *mut c_void, p, 4),
            INVALID_VALUE,
            "use after free"
        );
        let mut pinned = null_mut();
        assert_eq!(cuMemHostAlloc(&mut pinned, 0, 0), INVALID_VALUE);
        assert_eq!(
            cuMemFreeHost(0x40 as *mut c_void),
            INVALID_VALUE,
            "not a pinned buffer"
        );
    }
}

#[test]
fn launches_outside_the_limits_are_refused() {
    context();
    let (rc, module) = load(PTX);
    assert_eq!(rc, SUCCESS);
    // SAFETY: valid locals; the kernel's one parameter is a u64 pointing at a 1024-int buffer.
    unsafe {
        let mut func = null_mut();
        let name = CString::new("store").unwrap();
        assert_eq!(
            cuModuleGetFunction(&mut func, module, name.as_ptr()),
            SUCCESS
        );
        let missing = CString::new("nope").unwrap();
        assert_eq!(
            cuModuleGetFunction(&mut func.clone(), module, missing.as_ptr()),
            NOT_FOUND
        );
        let mut out = 0u64;
        assert_eq!(cuMemAlloc_v2(&mut out, 4 * 1024), SUCCESS);
        let mut arg = out;
        let mut params = [&mut arg as *mut u64 as *mut c_void];
        let launch = |g: u32, b: u32, params: *mut *mut c_void| {
            cuLaunchKernel(func, g, 1, 1, b, 1, 1, 0, null_mut(), params, null_mut())
        };
        assert_eq!(
            launch(0, 32, params.as_mut_ptr()),
            INVALID_VALUE,
            "empty grid"
        );
        assert_eq!(
            launch(1, 2048, params.as_mut_ptr()),
            INVALID_VALUE,
            "block over 1024 threads"
        );
        assert_eq!(launch(1, 32, null_mut()), INVALID_VALUE, "no parameters");
        let mut null_param = [null_mut::<c_void>()];
        assert_eq!(
            launch(1, 32, null_param.as_mut_ptr()),
            INVALID_VALUE,
            "a null parameter pointer"
        );
        // The `extra` form with a parameter buffer of the wrong size.
        let mut size = 4usize;
        let mut extra = [
            std::ptr::without_provenance_mut(1), // CU_LAUNCH_PARAM_BUFFER_POINTER
            &mut arg as *mut u64 as *mut c_void,
            std::ptr::without_provenance_mut(2), // CU_LAUNCH_PARAM_BUFFER_SIZE
            &mut size as *mut usize as *mut c_void,
            null_mut(),
        ];
        let rc = cuLaunchKernel(
            func,
            1,
            1,
            1,
            32,
            1,
            1,
            0,
            null_mut(),
            null_mut(),
            extra.as_mut_ptr(),
        );
        assert_eq!(rc, INVALID_VALUE, "extra buffer of the wrong size");
        assert_eq!(
            cuLaunchKernel(
                0x99 as *mut c_void,
                1,
                1,
                1,
                32,
                1,
                1,
                0,
                null_mut(),
                params.as_mut_ptr(),
                null_mut()
            ),
            INVALID_HANDLE
        );
        // A good launch still works afterwards, and writes what it should.
        assert_eq!(launch(1, 32, params.as_mut_ptr()), SUCCESS);
        let mut back = [0u32; 32];
        assert_eq!(
            cuMemcpyDtoH_v2(back.as_mut_ptr() as *mut c_void, out, 128),
            SUCCESS
        );
        assert_eq!(back.to_vec(), (0..32).collect::<Vec<u32>>());
        assert_eq!(cuMemFree_v2(out), SUCCESS);
    }
}

/// `cuModuleGetFunction`'s result for kernel `name` of `module`.
fn function(module: *mut c_void, name: &str) -> u32 {
    let name = CString::new(name).unwrap();
    let mut func = null_mut();
    // SAFETY: a module handle from `load`, a NUL-terminated name and a valid out-pointer.
    unsafe { cuModuleGetFunction(&mut func, module, name.as_ptr()) }
}

#[test]
fn unreadable_ptx_is_invalid_ptx() {
    context();
    assert_eq!(load("this is not PTX").0, INVALID_PTX);
    assert_eq!(
        load(&PTX.replace("ret;\n}", "ret;\n")).0,
        INVALID_PTX,
        "unterminated body"
    );
}

/// A kernel the interpreter cannot run (an unknown instruction or type, a call to a `.func`) does
/// not stop its module from loading, as candle's modules need: asking for it is refused, and the
/// module's other kernels load.
#[test]
fn an_unrunnable_kernel_is_refused_when_asked_for() {
    context();
    let bad = ".visible .entry k()\n{\nfoo.bar %r1;\n}\n";
    let func = ".visible .func (.param .b32 r) f()\n{\nret;\n}\n";
    for (text, what) in [
        (format!("{PTX}{bad}"), "unknown instruction"),
        (
            PTX.replace(".visible .entry", &format!("{func}.visible .entry")),
            "a .func",
        ),
        (
            PTX.replace("st.global.u32", "st.global.u33"),
            "unknown type",
        ),
    ] {
        let (rc, module) = load(&text);
        assert_eq!(rc, SUCCESS, "{what}");
        let broken = what == "unknown type";
        let (want_store, want_k) = if broken {
            (NOT_SUPPORTED, NOT_FOUND)
        } else {
            (SUCCESS, NOT_SUPPORTED)
        };
        assert_eq!(function(module, "store"), want_store, "{what}");
        if what == "unknown instruction" {
            assert_eq!(function(module, "k"), want_k, "{what}");
        }
        // SAFETY: a module handle from `load`.
        assert_eq!(unsafe { cuModuleUnload(module) }, SUCCESS);
    }
}

#[test]
fn calls_without_a_context_are_refused() {
    // SAFETY: a fresh thread has no current context; the out-pointer is a valid local.
    let rc = std::thread::spawn(|| unsafe {
        assert_eq!(cuInit(0), SUCCESS);
        let mut p = 0u64;
        cuMemAlloc_v2(&mut p, 16)
    })
    .join()
    .unwrap();
    assert_eq!(rc, INVALID_CONTEXT);
}

//! A launch that faults stops with the sanitizer's error at the next synchronisation, and the
//! error stays (a real driver's context is unusable after an illegal address). In a file of its
//! own: the sticky error would fail every other test of the process.

use std::ffi::{c_void, CString};
use std::ptr::{null, null_mut};

use gradmask_vgpu::driver::api_device::*;
use gradmask_vgpu::driver::api_memory::*;
use gradmask_vgpu::driver::api_module::*;
use gradmask_vgpu::driver::api_stream::*;

const SUCCESS: u32 = 0;
const ILLEGAL_ADDRESS: u32 = 700;

const PTX: &str = ".version 9.0\n.target sm_90\n.address_size 64\n\
    .visible .entry store(.param .u64 out)\n{\n.reg .b64 %rd<3>;\n.reg .b32 %r<2>;\n\
    ld.param.u64 %rd1, [out];\nmov.u32 %r1, %tid.x;\nmul.wide.u32 %rd2, %r1, 4;\nadd.s64 %rd1, %rd1, %rd2;\n\
    st.global.u32 [%rd1], %r1;\nret;\n}\n";

/// An out-of-bounds store stops the launch with ILLEGAL_ADDRESS at the next synchronisation,
/// naming the kernel and thread in the error string.
#[test]
fn a_fault_names_where_it_happened() {
    // SAFETY: valid locals; the buffer is deliberately one int short for a 32-thread block.
    unsafe {
        assert_eq!(cuInit(0), SUCCESS);
        let mut ctx = null_mut();
        assert_eq!(cuDevicePrimaryCtxRetain(&mut ctx, 0), SUCCESS);
        assert_eq!(cuCtxSetCurrent(ctx), SUCCESS);
        let text = CString::new(PTX).unwrap();
        let mut module = null_mut();
        assert_eq!(
            cuModuleLoadData(&mut module, text.as_ptr() as *const c_void),
            SUCCESS
        );
        let mut func = null_mut();
        let name = CString::new("store").unwrap();
        assert_eq!(
            cuModuleGetFunction(&mut func, module, name.as_ptr()),
            SUCCESS
        );
        let mut stream = null_mut();
        assert_eq!(cuStreamCreate(&mut stream, 0), SUCCESS);
        let mut out = 0u64;
        assert_eq!(cuMemAlloc_v2(&mut out, 4 * 31), SUCCESS);
        let mut arg = out;
        let mut params = [&mut arg as *mut u64 as *mut c_void];
        assert_eq!(
            cuLaunchKernel(
                func,
                1,
                1,
                1,
                32,
                1,
                1,
                0,
                stream,
                params.as_mut_ptr(),
                null_mut()
            ),
            SUCCESS
        );
        assert_eq!(cuStreamSynchronize(stream), ILLEGAL_ADDRESS);
        let mut text = null();
        assert_eq!(cuGetErrorString(ILLEGAL_ADDRESS, &mut text), SUCCESS);
        let text = std::ffi::CStr::from_ptr(text).to_string_lossy();
        assert!(
            text.contains("kernel store") && text.contains("thread (31,0,0)"),
            "{text}"
        );
        // The context stays unusable, as after an illegal address on a GPU.
        assert_eq!(cuCtxSynchronize(), ILLEGAL_ADDRESS);
    }
}

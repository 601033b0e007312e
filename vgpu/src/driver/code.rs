//! CUresult codes, their names and strings, and how a launch fault becomes one.

use std::cell::Cell;
use std::ffi::{c_char, CString};

use crate::exec::{Fault, FaultKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Code {
    Success = 0,
    InvalidValue = 1,
    OutOfMemory = 2,
    NotInitialized = 3,
    NoDevice = 100,
    InvalidDevice = 101,
    InvalidImage = 200,
    InvalidContext = 201,
    NoBinaryForGpu = 209,
    InvalidPtx = 218,
    InvalidHandle = 400,
    NotFound = 500,
    NotReady = 600,
    IllegalAddress = 700,
    LaunchOutOfResources = 701,
    IllegalInstruction = 715,
    MisalignedAddress = 716,
    LaunchFailed = 719,
    NotSupported = 801,
    Unknown = 999,
}

impl Code {
    pub fn from_raw(raw: u32) -> Option<Code> {
        ALL.iter().copied().find(|c| *c as u32 == raw)
    }

    pub fn name(self) -> &'static str {
        match self {
            Code::Success => "CUDA_SUCCESS\0",
            Code::InvalidValue => "CUDA_ERROR_INVALID_VALUE\0",
            Code::OutOfMemory => "CUDA_ERROR_OUT_OF_MEMORY\0",
            Code::NotInitialized => "CUDA_ERROR_NOT_INITIALIZED\0",
            Code::NoDevice => "CUDA_ERROR_NO_DEVICE\0",
            Code::InvalidDevice => "CUDA_ERROR_INVALID_DEVICE\0",
            Code::InvalidImage => "CUDA_ERROR_INVALID_IMAGE\0",
            Code::InvalidContext => "CUDA_ERROR_INVALID_CONTEXT\0",
            Code::NoBinaryForGpu => "CUDA_ERROR_NO_BINARY_FOR_GPU\0",
            Code::InvalidPtx => "CUDA_ERROR_INVALID_PTX\0",
            Code::InvalidHandle => "CUDA_ERROR_INVALID_HANDLE\0",
            Code::NotFound => "CUDA_ERROR_NOT_FOUND\0",
            Code::NotReady => "CUDA_ERROR_NOT_READY\0",
            Code::IllegalAddress => "CUDA_ERROR_ILLEGAL_ADDRESS\0",
            Code::LaunchOutOfResources => "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES\0",
            Code::IllegalInstruction => "CUDA_ERROR_ILLEGAL_INSTRUCTION\0",
            Code::MisalignedAddress => "CUDA_ERROR_MISALIGNED_ADDRESS\0",
            Code::LaunchFailed => "CUDA_ERROR_LAUNCH_FAILED\0",
            Code::NotSupported => "CUDA_ERROR_NOT_SUPPORTED\0",
            Code::Unknown => "CUDA_ERROR_UNKNOWN\0",
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Code::Success => "no error\0",
            Code::InvalidValue => "invalid argument\0",
            Code::OutOfMemory => "out of memory\0",
            Code::NotInitialized => "initialization error\0",
            Code::NoDevice => "no CUDA-capable device is detected\0",
            Code::InvalidDevice => "invalid device ordinal\0",
            Code::InvalidImage => "device kernel image is invalid\0",
            Code::InvalidContext => "invalid device context\0",
            Code::NoBinaryForGpu => "no kernel image is available for execution on the device\0",
            Code::InvalidPtx => "a PTX JIT compilation failed\0",
            Code::InvalidHandle => "invalid resource handle\0",
            Code::NotFound => "named symbol not found\0",
            Code::NotReady => "device not ready\0",
            Code::IllegalAddress => "an illegal memory access was encountered\0",
            Code::LaunchOutOfResources => "too many resources requested for launch\0",
            Code::IllegalInstruction => "an illegal instruction was encountered\0",
            Code::MisalignedAddress => "misaligned address\0",
            Code::LaunchFailed => "unspecified launch failure\0",
            Code::NotSupported => "operation not supported\0",
            Code::Unknown => "unknown error\0",
        }
    }
}

const ALL: [Code; 20] = [
    Code::Success,
    Code::InvalidValue,
    Code::OutOfMemory,
    Code::NotInitialized,
    Code::NoDevice,
    Code::InvalidDevice,
    Code::InvalidImage,
    Code::InvalidContext,
    Code::NoBinaryForGpu,
    Code::InvalidPtx,
    Code::InvalidHandle,
    Code::NotFound,
    Code::NotReady,
    Code::IllegalAddress,
    Code::LaunchOutOfResources,
    Code::IllegalInstruction,
    Code::MisalignedAddress,
    Code::LaunchFailed,
    Code::NotSupported,
    Code::Unknown,
];

thread_local! {
    /// The detail of the last error this thread was given, returned by `cuGetErrorString` for
    /// that code so that the caller's message says where a launch failed. The strings are leaked
    /// (a caller may keep the pointer); errors are few.
    static DETAIL: Cell<Option<(u32, &'static CString)>> = const { Cell::new(None) };
}

pub fn detail(code: u32) -> Option<*const c_char> {
    DETAIL.with(|d| d.get().filter(|(c, _)| *c == code).map(|(_, s)| s.as_ptr()))
}

/// Prints a launch fault and makes it the detail of its code.
pub fn report_fault(fault: &Fault) -> Code {
    let code = match fault.kind {
        FaultKind::Memcheck => Code::IllegalAddress,
        FaultKind::Misaligned => Code::MisalignedAddress,
        FaultKind::Synccheck => Code::IllegalInstruction,
        FaultKind::Initcheck | FaultKind::Racecheck | FaultKind::Unsupported => Code::LaunchFailed,
    };
    remember(code, &fault.message);
    code
}

/// Prints `message` on stderr and keeps it as the detail of `code`.
pub fn remember(code: Code, message: &str) {
    eprintln!("gradmask-vgpu: {message}");
    let text = format!("{}: {message}", code.text().trim_end_matches('\0'));
    let leaked: &'static CString =
        Box::leak(Box::new(CString::new(text.replace('\0', " ")).unwrap()));
    DETAIL.with(|d| d.set(Some((code as u32, leaked))));
}

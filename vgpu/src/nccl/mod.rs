//! A stand-in NCCL for the emulated device: the entry points cudarc 0.19's `nccl` module calls for
//! communicators and all-reduce, exported from the same library as the driver. `scripts/vgpu.sh`
//! links it as `libnccl.so` beside `libcuda.so`, so one loaded copy serves both (the dynamic
//! loader maps a file once) and NCCL calls reach the device's memory and streams.
//!
//! Ranks are threads of one process on the one emulated device (`ncclCommInitAll`, or
//! `ncclCommInitRank` with an id from `ncclGetUniqueId`). What differs from NCCL, and why:
//! - `ncclAllReduce` is synchronous for the host: it runs the caller's stream to this point, reads
//!   the send buffer, waits for every rank's call, sums in rank order (so every rank gets the
//!   same bits; sum only), and writes the receive buffer before returning. Stream order is kept;
//!   what a real NCCL overlaps with the host is not modelled.
//! - Ranks must call in the same order with the same count, type and operation, as NCCL
//!   requires; a mismatch fails every rank of that call with `ncclInvalidUsage` instead of
//!   hanging or corrupting.
//! - A rank that destroys or aborts its communicator breaks the group: the others' calls fail
//!   with `ncclRemoteError` instead of waiting forever.
//! - Groups (`ncclGroupStart`/`End`) are accepted and do nothing: calls run one at a time.

#![allow(non_snake_case)]

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use group::{new_group, Group};

use crate::driver::code::Code;
use crate::driver::{stream_id, with_device};

mod group;

const SUCCESS: c_int = 0;
const UNHANDLED_CUDA_ERROR: c_int = 1;
const INVALID_ARGUMENT: c_int = 4;
const INVALID_USAGE: c_int = 5;
const REMOTE_ERROR: c_int = 6;
/// `ncclSum` in `ncclRedOp_t`.
const SUM: c_int = 0;
/// The id's magic, in its first 8 bytes; the next 8 are a counter.
const MAGIC: u64 = 0x7667_7075_6e63_636c;

/// What an `ncclComm_t` points to.
struct Comm {
    group: Arc<Group>,
    rank: usize,
}

static GROUPS: Mutex<Option<HashMap<u64, Arc<Group>>>> = Mutex::new(None);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// # Safety
/// `version` must be writable.
#[no_mangle]
pub unsafe extern "C" fn ncclGetVersion(version: *mut c_int) -> c_int {
    if version.is_null() {
        return INVALID_ARGUMENT;
    }
    // SAFETY: checked non-null; writable per the contract.
    unsafe { *version = 23203 };
    SUCCESS
}

/// # Safety
/// `id` must point to 128 writable bytes (an `ncclUniqueId`).
#[no_mangle]
pub unsafe extern "C" fn ncclGetUniqueId(id: *mut u8) -> c_int {
    if id.is_null() {
        return INVALID_ARGUMENT;
    }
    let mut bytes = [0u8; 128];
    bytes[..8].copy_from_slice(&MAGIC.to_le_bytes());
    bytes[8..16].copy_from_slice(&NEXT_ID.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    // SAFETY: 128 writable bytes per the contract.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), id, 128) };
    SUCCESS
}

fn publish(comm: Comm) -> *mut c_void {
    Box::into_raw(Box::new(comm)) as *mut c_void
}

/// `ncclUniqueId` is passed by value: 128 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UniqueId {
    internal: [u8; 128],
}

/// # Safety
/// `comm` must be writable. The ranks of one id must give the same `nranks`.
#[no_mangle]
pub unsafe extern "C" fn ncclCommInitRank(
    comm: *mut *mut c_void,
    nranks: c_int,
    id: UniqueId,
    rank: c_int,
) -> c_int {
    let magic = u64::from_le_bytes(id.internal[..8].try_into().expect("8 bytes"));
    let key = u64::from_le_bytes(id.internal[8..16].try_into().expect("8 bytes"));
    if comm.is_null() || magic != MAGIC || nranks < 1 || rank < 0 || rank >= nranks {
        return INVALID_ARGUMENT;
    }
    let mut groups = GROUPS.lock().unwrap_or_else(|e| e.into_inner());
    let group = groups
        .get_or_insert_with(HashMap::new)
        .entry(key)
        .or_insert_with(|| new_group(nranks as usize))
        .clone();
    if group.world != nranks as usize {
        return INVALID_USAGE;
    }
    // SAFETY: checked non-null; writable per the contract.
    unsafe {
        *comm = publish(Comm {
            group,
            rank: rank as usize,
        })
    };
    SUCCESS
}

/// # Safety
/// `comms` must have room for `ndev` handles and `devlist`, when not null, hold `ndev` ordinals.
#[no_mangle]
pub unsafe extern "C" fn ncclCommInitAll(
    comms: *mut *mut c_void,
    ndev: c_int,
    devlist: *const c_int,
) -> c_int {
    if comms.is_null() || ndev < 1 {
        return INVALID_ARGUMENT;
    }
    for i in 0..ndev as usize {
        // SAFETY: `ndev` ordinals per the contract when not null.
        if !devlist.is_null() && unsafe { *devlist.add(i) } != 0 {
            return INVALID_ARGUMENT; // the stand-in has device 0 only
        }
    }
    let group = new_group(ndev as usize);
    for rank in 0..ndev as usize {
        let comm = publish(Comm {
            group: group.clone(),
            rank,
        });
        // SAFETY: room for `ndev` handles per the contract.
        unsafe { *comms.add(rank) = comm };
    }
    SUCCESS
}

/// # Safety
/// `comm` must be a handle from `ncclCommInit*` not yet destroyed or aborted.
unsafe fn comm_ref<'a>(comm: *mut c_void) -> Option<&'a Comm> {
    // SAFETY: a live handle per the contract (null is refused).
    (!comm.is_null()).then(|| unsafe { &*(comm as *const Comm) })
}

/// # Safety
/// `comm` must be a live handle; it is freed.
#[no_mangle]
pub unsafe extern "C" fn ncclCommDestroy(comm: *mut c_void) -> c_int {
    if comm.is_null() {
        return INVALID_ARGUMENT;
    }
    // SAFETY: a live handle from `publish`, freed once per the contract.
    let comm = unsafe { Box::from_raw(comm as *mut Comm) };
    comm.group.leave();
    SUCCESS
}

/// # Safety
/// As `ncclCommDestroy`.
#[no_mangle]
pub unsafe extern "C" fn ncclCommAbort(comm: *mut c_void) -> c_int {
    // SAFETY: the same contract.
    unsafe { ncclCommDestroy(comm) }
}

/// # Safety
/// As `ncclCommDestroy`, without freeing.
#[no_mangle]
pub unsafe extern "C" fn ncclCommFinalize(comm: *mut c_void) -> c_int {
    // SAFETY: the same contract.
    if unsafe { comm_ref(comm) }.is_some() {
        SUCCESS
    } else {
        INVALID_ARGUMENT
    }
}

/// # Safety
/// `comm` must be a live handle and `out` writable.
#[no_mangle]
pub unsafe extern "C" fn ncclCommCount(comm: *mut c_void, out: *mut c_int) -> c_int {
    // SAFETY: the contract.
    match unsafe { comm_ref(comm) } {
        Some(c) if !out.is_null() => {
            // SAFETY: checked non-null; writable per the contract.
            unsafe { *out = c.group.world as c_int };
            SUCCESS
        }
        _ => INVALID_ARGUMENT,
    }
}

/// # Safety
/// As `ncclCommCount`.
#[no_mangle]
pub unsafe extern "C" fn ncclCommUserRank(comm: *mut c_void, out: *mut c_int) -> c_int {
    // SAFETY: the contract.
    match unsafe { comm_ref(comm) } {
        Some(c) if !out.is_null() => {
            // SAFETY: checked non-null; writable per the contract.
            unsafe { *out = c.rank as c_int };
            SUCCESS
        }
        _ => INVALID_ARGUMENT,
    }
}

/// # Safety
/// As `ncclCommCount`.
#[no_mangle]
pub unsafe extern "C" fn ncclCommCuDevice(comm: *mut c_void, out: *mut c_int) -> c_int {
    // SAFETY: the contract.
    match unsafe { comm_ref(comm) } {
        Some(_) if !out.is_null() => {
            // SAFETY: checked non-null; writable per the contract.
            unsafe { *out = 0 };
            SUCCESS
        }
        _ => INVALID_ARGUMENT,
    }
}

#[no_mangle]
pub extern "C" fn ncclGroupStart() -> c_int {
    SUCCESS
}

#[no_mangle]
pub extern "C" fn ncclGroupEnd() -> c_int {
    SUCCESS
}

#[no_mangle]
pub extern "C" fn ncclGetErrorString(result: c_int) -> *const c_char {
    let text: &'static [u8] = match result {
        SUCCESS => b"no error\0",
        UNHANDLED_CUDA_ERROR => b"unhandled cuda error (the stand-in driver failed)\0",
        INVALID_ARGUMENT => b"invalid argument\0",
        INVALID_USAGE => b"invalid usage (ranks called with different arguments)\0",
        REMOTE_ERROR => b"remote process exited or there was a network error\0",
        _ => b"unknown result code\0",
    };
    text.as_ptr() as *const c_char
}

/// # Safety
/// `comm` must be a live handle; `send` and `recv` device addresses of `count` elements of
/// `datatype` on the stand-in device; `stream` a stream of its context.
#[no_mangle]
pub unsafe extern "C" fn ncclAllReduce(
    send: *const c_void,
    recv: *mut c_void,
    count: usize,
    datatype: c_int,
    op: c_int,
    comm: *mut c_void,
    stream: *mut c_void,
) -> c_int {
    // SAFETY: the contract.
    let Some(comm) = (unsafe { comm_ref(comm) }) else {
        return INVALID_ARGUMENT;
    };
    let Some(size) = group::elem_size(datatype) else {
        return INVALID_ARGUMENT;
    };
    let stream = stream_id(stream as usize);
    let mut bytes = vec![0u8; count * size];
    let read = with_device(|dev| {
        let upto = dev
            .streams
            .get(&stream)
            .ok_or(Code::InvalidHandle)?
            .enqueued;
        dev.run_stream(stream, upto)?;
        dev.mem
            .read(send as u64, &mut bytes)
            .map_err(|_| Code::InvalidValue)
    });
    if read != 0 {
        return UNHANDLED_CUDA_ERROR;
    }
    let summed = match group::rendezvous(comm, (count, datatype, op), bytes) {
        Ok(summed) => summed,
        Err(code) => return code,
    };
    let written = with_device(|dev| {
        dev.mem
            .write(recv as u64, &summed)
            .map_err(|_| Code::InvalidValue)
    });
    if written != 0 {
        return UNHANDLED_CUDA_ERROR;
    }
    SUCCESS
}

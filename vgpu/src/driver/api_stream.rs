//! Streams, events and host functions.

#![allow(non_snake_case)]

use std::ffi::{c_int, c_uint, c_void};

use super::code::Code;
use super::state::{Event, Stream, Work};
use super::{stream_id, with_context, CUresult};

/// # Safety
/// `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn cuStreamCreate(out: *mut *mut c_void, _flags: c_uint) -> CUresult {
    with_context(|dev| {
        if out.is_null() {
            return Err(Code::InvalidValue);
        }
        let id = dev.handle();
        dev.streams.insert(id, Stream::default());
        // SAFETY: checked non-null.
        unsafe { *out = id as *mut c_void };
        Ok(())
    })
}

/// # Safety
/// As `cuStreamCreate`; priorities are accepted and ignored.
#[no_mangle]
pub unsafe extern "C" fn cuStreamCreateWithPriority(
    out: *mut *mut c_void,
    flags: c_uint,
    _priority: c_int,
) -> CUresult {
    // SAFETY: forwarded with the same contract.
    unsafe { cuStreamCreate(out, flags) }
}

/// # Safety
/// None beyond the driver API's.
#[no_mangle]
pub unsafe extern "C" fn cuStreamDestroy_v2(stream: *mut c_void) -> CUresult {
    with_context(|dev| {
        let id = stream_id(stream as usize);
        if id == 0 || !dev.streams.contains_key(&id) {
            return Err(Code::InvalidHandle);
        }
        // Work already queued still runs, as on a GPU.
        let upto = dev.streams[&id].enqueued;
        dev.run_stream(id, upto)?;
        dev.streams.remove(&id);
        Ok(())
    })
}

/// # Safety
/// None beyond the driver API's.
#[no_mangle]
pub unsafe extern "C" fn cuStreamSynchronize(stream: *mut c_void) -> CUresult {
    with_context(|dev| {
        let id = stream_id(stream as usize);
        let upto = dev.streams.get(&id).ok_or(Code::InvalidHandle)?.enqueued;
        dev.run_stream(id, upto)?;
        dev.check_sticky()
    })
}

/// # Safety
/// None beyond the driver API's. Runs the stream's work (a query makes progress).
#[no_mangle]
pub unsafe extern "C" fn cuStreamQuery(stream: *mut c_void) -> CUresult {
    // SAFETY: forwarded with the same contract.
    unsafe { cuStreamSynchronize(stream) }
}

/// # Safety
/// None beyond the driver API's.
#[no_mangle]
pub unsafe extern "C" fn cuStreamWaitEvent(
    stream: *mut c_void,
    event: *mut c_void,
    _flags: c_uint,
) -> CUresult {
    with_context(|dev| {
        let ev = *dev.events.get(&(event as u64)).ok_or(Code::InvalidHandle)?;
        let id = stream_id(stream as usize);
        dev.streams.get(&id).ok_or(Code::InvalidHandle)?;
        match ev.at {
            None => Ok(()), // never recorded: nothing to wait for
            Some((other, upto)) => dev.enqueue(
                id,
                Work::Wait {
                    stream: other,
                    upto,
                },
            ),
        }
    })
}

/// # Safety
/// `func` must be a host function that takes `data`; it must not call the driver.
#[no_mangle]
pub unsafe extern "C" fn cuLaunchHostFunc(
    stream: *mut c_void,
    func: Option<extern "C" fn(*mut c_void)>,
    data: *mut c_void,
) -> CUresult {
    with_context(|dev| {
        let func = func.ok_or(Code::InvalidValue)?;
        dev.enqueue(
            stream_id(stream as usize),
            Work::HostFn {
                func: func as usize,
                data: data as usize,
            },
        )
    })
}

/// # Safety
/// `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn cuEventCreate(out: *mut *mut c_void, _flags: c_uint) -> CUresult {
    with_context(|dev| {
        if out.is_null() {
            return Err(Code::InvalidValue);
        }
        let id = dev.handle();
        dev.events.insert(id, Event::default());
        // SAFETY: checked non-null.
        unsafe { *out = id as *mut c_void };
        Ok(())
    })
}

/// # Safety
/// None beyond the driver API's.
#[no_mangle]
pub unsafe extern "C" fn cuEventDestroy_v2(event: *mut c_void) -> CUresult {
    with_context(|dev| {
        dev.events
            .remove(&(event as u64))
            .map(|_| ())
            .ok_or(Code::InvalidHandle)
    })
}

/// # Safety
/// None beyond the driver API's.
#[no_mangle]
pub unsafe extern "C" fn cuEventRecord(event: *mut c_void, stream: *mut c_void) -> CUresult {
    with_context(|dev| {
        let id = stream_id(stream as usize);
        if !dev.events.contains_key(&(event as u64)) {
            return Err(Code::InvalidHandle);
        }
        dev.enqueue(
            id,
            Work::Record {
                event: event as u64,
            },
        )?;
        let at = dev.streams[&id].enqueued;
        dev.events
            .insert(event as u64, Event { at: Some((id, at)) });
        Ok(())
    })
}

/// # Safety
/// None beyond the driver API's.
#[no_mangle]
pub unsafe extern "C" fn cuEventRecordWithFlags(
    event: *mut c_void,
    stream: *mut c_void,
    _flags: c_uint,
) -> CUresult {
    // SAFETY: forwarded with the same contract.
    unsafe { cuEventRecord(event, stream) }
}

/// # Safety
/// None beyond the driver API's.
#[no_mangle]
pub unsafe extern "C" fn cuEventSynchronize(event: *mut c_void) -> CUresult {
    with_context(|dev| {
        let ev = *dev.events.get(&(event as u64)).ok_or(Code::InvalidHandle)?;
        if let Some((stream, upto)) = ev.at {
            if dev.streams.contains_key(&stream) {
                dev.run_stream(stream, upto)?;
            }
        }
        dev.check_sticky()
    })
}

/// # Safety
/// None beyond the driver API's. A query never runs work: `CUDA_ERROR_NOT_READY` until a
/// synchronisation has run the stream up to the event. So the host code that polls (the
/// optimizer's step counter) sees its copies late, as from a GPU far behind it, and code that
/// spins on a query without ever synchronising would hang here (gradmask has none).
#[no_mangle]
pub unsafe extern "C" fn cuEventQuery(event: *mut c_void) -> CUresult {
    with_context(|dev| {
        let ev = *dev.events.get(&(event as u64)).ok_or(Code::InvalidHandle)?;
        dev.check_sticky()?;
        match ev.at {
            Some((stream, upto)) if dev.streams.get(&stream).is_some_and(|s| s.done < upto) => {
                Err(Code::NotReady)
            }
            _ => Ok(()),
        }
    })
}

/// # Safety
/// `ms` must be writable. The stand-in has no clock: the time is 0.
#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime(
    ms: *mut f32,
    start: *mut c_void,
    end: *mut c_void,
) -> CUresult {
    with_context(|dev| {
        if ms.is_null() {
            return Err(Code::InvalidValue);
        }
        for e in [start, end] {
            let ev = dev.events.get(&(e as u64)).ok_or(Code::InvalidHandle)?;
            if ev.at.is_none() {
                return Err(Code::InvalidHandle);
            }
        }
        // SAFETY: checked non-null.
        unsafe { *ms = 0.0 };
        Ok(())
    })
}

/// # Safety
/// As `cuEventElapsedTime`.
#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime_v2(
    ms: *mut f32,
    start: *mut c_void,
    end: *mut c_void,
) -> CUresult {
    // SAFETY: forwarded with the same contract.
    unsafe { cuEventElapsedTime(ms, start, end) }
}

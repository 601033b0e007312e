//! Pinned host buffers for downloads, which know when the device is done with them.
//!
//! An asynchronous copy to pinned memory runs when the stream reaches it, not when it is enqueued:
//! the host must not read a download before it has landed. cudarc's `PinnedHostSlice` waits on an
//! event that cudarc records only once the context has several streams, so on the single-stream
//! path it waits for nothing. [`Pinned`] records its own event after every copy and waits on it
//! before a read: that copy (and so the work queued before it) only.
//!
//! Uploads do not go through pinned staging: the tables the host uploads (gradient and parameter
//! addresses) are small, and a copy from pageable memory is staged by the driver when enqueued, so
//! the host never waits for an earlier upload to leave a staging buffer. (The stand-in driver,
//! whose streams run only when the host synchronises, once caught a step's pinned work list
//! overwritten before its upload had run.)

use std::sync::Arc;

use cudarc::driver::{
    CudaEvent, CudaSlice, CudaStream, DeviceRepr, PinnedHostSlice, ValidAsZeroBits,
};

use super::module::cuda;
use crate::Result;

pub struct Pinned<T> {
    host: PinnedHostSlice<T>,
    /// Recorded after the last download into `host`.
    done: CudaEvent,
}

impl<T: DeviceRepr + ValidAsZeroBits> Pinned<T> {
    /// `len` (at least 1) elements of pinned memory on `stream`'s context.
    pub fn new(stream: &Arc<CudaStream>, len: usize) -> Result<Self> {
        let ctx = stream.context();
        // SAFETY: the contents are only read through `read`, after a download filled them; the
        // first contents are never looked at.
        let host = unsafe { ctx.alloc_pinned_with_flags::<T>(len.max(1), 0) }.map_err(cuda)?;
        Ok(Pinned {
            host,
            done: ctx.new_event(None).map_err(cuda)?,
        })
    }

    /// The buffer as the last download left it; waits for that download.
    pub fn read(&self) -> Result<&[T]> {
        self.done.synchronize().map_err(cuda)?;
        self.host.as_slice().map_err(cuda)
    }

    /// The buffer as the last download left it if that download has landed; never waits.
    pub fn try_read(&self) -> Result<Option<&[T]>> {
        if self.done.try_is_complete().map_err(cuda)? {
            self.host.as_slice().map(Some).map_err(cuda)
        } else {
            Ok(None)
        }
    }

    /// Enqueues the copy of `src` into the buffer on `stream`.
    pub fn download(&mut self, stream: &Arc<CudaStream>, src: &CudaSlice<T>) -> Result<()> {
        stream.memcpy_dtoh(src, &mut self.host).map_err(cuda)?;
        self.done.record(stream).map_err(cuda)
    }
}

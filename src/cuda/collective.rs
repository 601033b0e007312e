//! `DeviceCollective`: the all-reduce of sharded selection on the GPU, on device buffers and the
//! caller's stream (no host sync), and `NcclCollective`, its implementation over NCCL (feature
//! `nccl`: cudarc's bindings, `libnccl` loaded at run time, from `scripts/install-nccl.sh`).
//!
//! One process per GPU: rank 0 makes a `cudarc::nccl::Id`, hands its 128 bytes to the other
//! processes however the trainer talks to them, and each calls `NcclCollective::from_rank`.
//! One thread per GPU: `NcclCollective::from_streams` makes every rank's communicator at once;
//! move one to each thread.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream};

use crate::Result;

/// An all-reduce (sum) over the ranks of a group, enqueued on a stream. Every rank calls the same
/// functions in the same order with buffers of the same length; the sum is in every rank's
/// buffer when the stream reaches that point. Failures to enqueue are [`crate::Error::Collective`].
pub trait DeviceCollective: Send + Sync {
    /// This rank, in `0..world()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world(&self) -> usize;
    /// Enqueues on `stream` the wrapping sum over all ranks of `buffer[..len]`, in place.
    fn all_reduce_u64(
        &mut self,
        stream: &Arc<CudaStream>,
        buffer: &mut CudaSlice<u64>,
        len: usize,
    ) -> Result<()>;
    /// Enqueues on `stream` the sum over all ranks of `buffer[..len]`, in place; every rank gets
    /// the same bits.
    fn all_reduce_f64(
        &mut self,
        stream: &Arc<CudaStream>,
        buffer: &mut CudaSlice<f64>,
        len: usize,
    ) -> Result<()>;
}

#[cfg(feature = "nccl")]
pub use nccl::NcclCollective;

#[cfg(feature = "nccl")]
mod nccl {
    use std::sync::Arc;

    use cudarc::driver::{CudaSlice, CudaStream};
    use cudarc::nccl::{Comm, Id, NcclType, ReduceOp};

    use super::DeviceCollective;
    use crate::{Error, Result};

    /// A rank of an NCCL communicator, bound to the stream its collectives run on.
    pub struct NcclCollective {
        comm: Comm,
    }

    // SAFETY: an NCCL communicator may be used from any thread as long as calls on it do not
    // overlap; every method here takes `&mut self`, and `&self` exposes only rank and world.
    unsafe impl Send for NcclCollective {}
    // SAFETY: as above: through `&self` nothing touches the communicator.
    unsafe impl Sync for NcclCollective {}

    fn nccl(e: impl std::fmt::Debug) -> Error {
        Error::Collective(format!("NCCL: {e:?}"))
    }

    /// Whether libnccl can be loaded (cudarc panics when it is asked to load a missing library).
    pub fn library_present() -> bool {
        cudarc::get_lib_name_candidates("nccl").iter().any(|name| {
            // SAFETY: opening NCCL runs its library initialisers only (no CUDA call is made).
            unsafe { libloading::Library::new(name) }.is_ok()
        })
    }

    impl NcclCollective {
        /// A fresh unique id, on the rank that creates the group (rank 0); its bytes
        /// (`id.internal()`) go to every other process, which rebuilds it with `Id::uninit`.
        pub fn unique_id() -> Result<Id> {
            if !library_present() {
                return Err(Error::Collective("libnccl was not found: run scripts/install-nccl.sh and put the folder it prints on LD_LIBRARY_PATH".into()));
            }
            Id::new().map_err(nccl)
        }

        /// One process per GPU: joins the group `id` as `rank` of `world`, with collectives on
        /// `stream` (the stream the selector and optimizer run on).
        pub fn from_rank(
            stream: Arc<CudaStream>,
            rank: usize,
            world: usize,
            id: Id,
        ) -> Result<Self> {
            if rank >= world {
                return Err(Error::ShardLayout(format!(
                    "rank {rank} of a world of {world}"
                )));
            }
            if !library_present() {
                return Err(Error::Collective("libnccl was not found".into()));
            }
            let comm = Comm::from_rank(stream, rank, world, id).map_err(nccl)?;
            Ok(NcclCollective { comm })
        }

        /// One thread per GPU: the communicators of every stream's device, rank `i` on
        /// `streams[i]`.
        pub fn from_streams(streams: Vec<Arc<CudaStream>>) -> Result<Vec<Self>> {
            if !library_present() {
                return Err(Error::Collective("libnccl was not found".into()));
            }
            let comms = Comm::from_devices(streams).map_err(nccl)?;
            Ok(comms
                .into_iter()
                .map(|comm| NcclCollective { comm })
                .collect())
        }

        /// The in-place sum of `buffer[..len]` on the communicator's stream, which must be
        /// `stream`.
        fn sum<T: NcclType>(
            &mut self,
            stream: &Arc<CudaStream>,
            buffer: &mut CudaSlice<T>,
            len: usize,
        ) -> Result<()> {
            self.check_stream(stream)?;
            if len > buffer.len() {
                let have = buffer.len();
                return Err(Error::Collective(format!(
                    "{len} elements of a {have}-element buffer"
                )));
            }
            let mut view = buffer.slice_mut(..len);
            self.comm
                .all_reduce_in_place(&mut view, &ReduceOp::Sum)
                .map(|_| ())
                .map_err(nccl)
        }

        fn check_stream(&self, stream: &Arc<CudaStream>) -> Result<()> {
            if self.comm.stream().cu_stream() == stream.cu_stream() {
                Ok(())
            } else {
                Err(Error::Collective(
                    "the communicator runs on another stream than the selector".into(),
                ))
            }
        }
    }

    impl DeviceCollective for NcclCollective {
        fn rank(&self) -> usize {
            self.comm.rank()
        }

        fn world(&self) -> usize {
            self.comm.world_size()
        }

        fn all_reduce_u64(
            &mut self,
            stream: &Arc<CudaStream>,
            buffer: &mut CudaSlice<u64>,
            len: usize,
        ) -> Result<()> {
            self.sum(stream, buffer, len)
        }

        fn all_reduce_f64(
            &mut self,
            stream: &Arc<CudaStream>,
            buffer: &mut CudaSlice<f64>,
            len: usize,
        ) -> Result<()> {
            self.sum(stream, buffer, len)
        }
    }
}

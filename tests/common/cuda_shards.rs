//! Shared by the sharded CUDA tests: ranks as threads, each on its own stream of the one device,
//! joined by a host-staged test double of `DeviceCollective` (or by NCCL, in the tests that make
//! communicators), and the flat (ZeRO) layout's ranges.

use std::ops::Range;
use std::sync::Arc;
use std::thread;

use cudarc::driver::{CudaSlice, CudaStream, DeviceRepr};
use gradmask::cuda::DeviceCollective;
use gradmask::{Collective, Error, ShardLayout, TensorTable, ThreadCollective};

/// The host-staged all-reduce (a test double: it waits for the stream).
pub struct Staged(pub ThreadCollective);

impl Staged {
    fn reduce<T: DeviceRepr + Default + Clone>(
        &mut self,
        stream: &Arc<CudaStream>,
        buffer: &mut CudaSlice<T>,
        len: usize,
        sum: impl FnOnce(&mut ThreadCollective, &mut [T]) -> gradmask::Result<()>,
    ) -> gradmask::Result<()> {
        let cuda = |e| Error::Cuda(format!("{e:?}"));
        let mut host = stream.clone_dtoh(&buffer.slice(..len)).map_err(cuda)?;
        sum(&mut self.0, &mut host)?;
        stream
            .memcpy_htod(&host, &mut buffer.slice_mut(..len))
            .map_err(cuda)?;
        stream.synchronize().map_err(cuda)
    }
}

impl DeviceCollective for Staged {
    fn rank(&self) -> usize {
        self.0.rank()
    }
    fn world(&self) -> usize {
        self.0.world()
    }
    fn all_reduce_u64(
        &mut self,
        stream: &Arc<CudaStream>,
        buffer: &mut CudaSlice<u64>,
        len: usize,
    ) -> gradmask::Result<()> {
        self.reduce(stream, buffer, len, |c, h| c.all_reduce_u64(h))
    }
    fn all_reduce_f64(
        &mut self,
        stream: &Arc<CudaStream>,
        buffer: &mut CudaSlice<f64>,
        len: usize,
    ) -> gradmask::Result<()> {
        self.reduce(stream, buffer, len, |c, h| c.all_reduce_f64(h))
    }
}

/// One rank's stream and collective.
pub type Rank = (Arc<CudaStream>, Box<dyn DeviceCollective>);

/// `world` ranks on new streams of `stream`'s device, joined by the host-staged test double.
pub fn staged(stream: &Arc<CudaStream>, world: usize) -> Vec<Rank> {
    ThreadCollective::group(world)
        .into_iter()
        .map(|c| {
            let rank_stream = stream.context().new_stream().unwrap();
            (
                rank_stream,
                Box::new(Staged(c)) as Box<dyn DeviceCollective>,
            )
        })
        .collect()
}

/// Runs `f(rank, stream, collective)` on one thread per rank; results in rank order.
pub fn on_ranks<R: Send>(
    ranks: Vec<Rank>,
    f: impl Fn(usize, Arc<CudaStream>, Box<dyn DeviceCollective>) -> R + Sync,
) -> Vec<R> {
    thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = ranks
            .into_iter()
            .enumerate()
            .map(|(rank, (stream, c))| s.spawn(move || f(rank, stream, c)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a rank panicked"))
            .collect()
    })
}

/// Each rank's ranges of the flat (ZeRO) layout.
pub fn flat(table: &TensorTable, world: usize) -> Vec<Vec<Range<usize>>> {
    (0..world)
        .map(|r| {
            let l = ShardLayout::flat(table, world, r).unwrap();
            (0..table.len()).map(|t| l.local_range(t)).collect()
        })
        .collect()
}

//! The sharded CUDA selector (`kernels/select_shard.cu`) against the unsharded CPU engine: 2 and 3
//! ranks as threads, each on its own stream, random and flat layouts, f32 and bf16, per-tensor and
//! global scope. Thresholds, kept counts and non-finite counts exact on every rank; sums of g^2
//! within `1e-9 * sum`.
//!
//! The ranks all-reduce through a host-staged test double of `DeviceCollective` (it syncs the
//! stream, sums on the host with `ThreadCollective`, copies back): the stand-in driver has no
//! NCCL. On a GPU with NCCL the same selector takes `NcclCollective` (feature `nccl`).

mod common;

use std::ops::Range;
use std::sync::Arc;

use common::cuda_steps::{gpu, sized, upload};
use common::shards::{random_layout, run_ranks};
use common::{draw, Dist, FromF32};
use cudarc::driver::{CudaSlice, CudaStream, DeviceRepr};
use gradmask::cuda::{CudaSelector, DeviceCollective};
use gradmask::{Collective, CpuSelector, Error, Scope, ShardLayout, TensorTable, ThreadCollective};
use half::bf16;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// The host-staged all-reduce (a test double: it waits for the stream).
struct Staged(ThreadCollective);

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
        stream.memcpy_htod(&host, &mut buffer.slice_mut(..len)).map_err(cuda)?;
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

/// Every rank's sharded CUDA selection of `grads` against the CPU engine's unsharded one.
fn compare<T: FromF32 + DeviceRepr>(
    stream: &Arc<CudaStream>,
    table: &TensorTable,
    scope: Scope,
    layout: &[Vec<Range<usize>>],
    grads: &[Vec<T>],
    ratio: f64,
) {
    let views: Vec<&[T]> = grads.iter().map(|g| &g[..]).collect();
    let want = CpuSelector::new(table, scope).select(&views, ratio).unwrap().clone();
    let results = run_ranks(layout.len(), |rank, c| {
        let stream = stream.context().new_stream().unwrap();
        let l = ShardLayout::new(table, layout, rank).unwrap();
        let mine: Vec<Vec<T>> =
            grads.iter().zip(&layout[rank]).map(|(g, r)| g[r.clone()].to_vec()).collect();
        let mut selector =
            CudaSelector::sharded(stream.clone(), table, scope, l, Box::new(Staged(c))).unwrap();
        let device = upload(&stream, &mine);
        selector.select(&device, ratio).unwrap();
        selector.copy_stats_async().unwrap();
        let stats = selector.stats().unwrap();
        drop(device);
        (stats, selector.comm_stats().calls)
    });
    for (rank, (got, calls)) in results.iter().enumerate() {
        let what = format!("rank {rank} of {}, {scope:?}, ratio {ratio}", layout.len());
        assert_eq!(want.groups.len(), got.groups.len());
        for (g, (c, d)) in want.groups.iter().zip(&got.groups).enumerate() {
            assert_eq!(
                (c.len, c.target, c.threshold_key, c.kept, c.non_finite),
                (d.len, d.target, d.threshold_key, d.kept, d.non_finite),
                "{what}: group {g}"
            );
            assert!((c.sum_sq - d.sum_sq).abs() <= 1e-9 * c.sum_sq, "{what}: group {g}");
        }
        assert_eq!(want.non_finite, got.non_finite, "{what}");
        assert!((want.sum_sq - got.sum_sq).abs() <= 1e-9 * want.sum_sq, "{what}");
        // f32: 3 histogram all-reduces and 1 of the sums; bf16: 2 and 1.
        assert_eq!(*calls, if T::DTYPE == gradmask::DType::F32 { 4 } else { 3 });
    }
}

#[test]
fn sharded_cuda_selection_is_the_unsharded_one() {
    let Some(stream) = gpu("sharded_cuda_selection_is_the_unsharded_one") else {
        return;
    };
    // Several GPU chunks (64K entries) per tensor, odd lengths, a one-entry tensor.
    let lengths: Vec<usize> = sized(&stream, vec![1, 3, 70_001, 200_003], vec![1, 3, 2_001, 70_001]);
    let table = TensorTable::per_tensor(&lengths).unwrap();
    let f32s: Vec<Vec<f32>> =
        lengths.iter().map(|&l| draw(Dist::LogNormal, l, l as u64)).collect();
    let halves: Vec<Vec<bf16>> = lengths.iter().map(|&l| draw(Dist::Ties, l, 9)).collect();
    let mut rng = StdRng::seed_from_u64(14);
    for world in [2usize, 3] {
        let random = random_layout(&mut rng, &lengths, world);
        let flat: Vec<Vec<Range<usize>>> = (0..world)
            .map(|r| {
                let l = ShardLayout::flat(&table, world, r).unwrap();
                (0..lengths.len()).map(|t| l.local_range(t)).collect()
            })
            .collect();
        compare(&stream, &table, Scope::PerTensor, &random, &f32s, 0.3);
        compare(&stream, &table, Scope::Global, &flat, &f32s, 0.9);
        compare(&stream, &table, Scope::PerTensor, &flat, &halves, 0.5);
    }
}

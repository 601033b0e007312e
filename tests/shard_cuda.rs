//! The sharded CUDA selector (`kernels/select_shard.cu`) against the unsharded CPU engine: 1 to 5
//! ranks as threads, each on its own stream of the one device, random and flat layouts, f32, bf16
//! and f16, per-tensor and global scope, Inf and NaN. Thresholds, kept counts and non-finite
//! counts exact on every rank; sums of g^2 within `1e-9 * sum` (the device adds them with atomics).
//!
//! Two collectives: a host-staged test double of `DeviceCollective` (it syncs the stream, sums on
//! the host with `ThreadCollective`, copies back), and with feature `nccl` the real
//! `NcclCollective` through cudarc's NCCL bindings, both ways of making communicators
//! (`from_streams`, `from_rank` with a unique id). On the stand-in driver, NCCL is its stand-in
//! (`vgpu/src/nccl`); on a GPU, libnccl from `scripts/install-nccl.sh`.

mod common;

use std::ops::Range;
use std::sync::Arc;

use common::cuda_shards::{flat, on_ranks, staged, Rank};
use common::cuda_steps::{gpu, sized, upload};
use common::shards::random_layout;
use common::{draw, Dist, FromF32};
use cudarc::driver::{CudaStream, DeviceRepr};
use gradmask::cuda::CudaSelector;
use gradmask::DType;
use gradmask::{CpuSelector, Error, Scope, ShardLayout, TensorTable};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Sums of g^2 from the device (atomics, in any order) against the CPU's exact one: within
/// `1e-9 * sum`, or the same non-finite value (a NaN or Inf gradient makes the sum one).
fn close(cpu: f64, device: f64) -> bool {
    if cpu.is_finite() {
        (cpu - device).abs() <= 1e-9 * cpu
    } else {
        cpu.to_bits() == device.to_bits() || (cpu.is_nan() && device.is_nan())
    }
}

/// Every rank's sharded CUDA selection of `grads` against the CPU engine's unsharded one.
fn compare<T: FromF32 + DeviceRepr>(
    ranks: Vec<Rank>,
    table: &TensorTable,
    scope: Scope,
    layout: &[Vec<Range<usize>>],
    grads: &[Vec<T>],
    ratio: f64,
) {
    let views: Vec<&[T]> = grads.iter().map(|g| &g[..]).collect();
    let want = CpuSelector::new(table, scope)
        .select(&views, ratio)
        .unwrap()
        .clone();
    let results = on_ranks(ranks, |rank, stream, c| {
        let l = ShardLayout::new(table, layout, rank).unwrap();
        let mine: Vec<Vec<T>> = grads
            .iter()
            .zip(&layout[rank])
            .map(|(g, r)| g[r.clone()].to_vec())
            .collect();
        let mut selector = CudaSelector::sharded(stream.clone(), table, scope, l, c).unwrap();
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
            assert!(
                close(c.sum_sq, d.sum_sq),
                "{what}: group {g}: {} {}",
                c.sum_sq,
                d.sum_sq
            );
        }
        assert_eq!(want.non_finite, got.non_finite, "{what}");
        assert!(
            close(want.sum_sq, got.sum_sq),
            "{what}: {} {}",
            want.sum_sq,
            got.sum_sq
        );
        // Pass 1 carries the histograms and the sums (2 all-reduces), then one per digit: f32
        // 2 more, bf16 and f16 1.
        assert_eq!(*calls, if T::DTYPE == DType::F32 { 4 } else { 3 }, "{what}");
    }
}

/// The lengths, gradients and layouts of the test: several GPU chunks (64K entries) in the
/// largest tensor on a GPU, odd lengths, a one-entry tensor, Inf and NaN in the f16 set.
struct Case {
    table: TensorTable,
    lengths: Vec<usize>,
    f32s: Vec<Vec<f32>>,
    bf16s: Vec<Vec<bf16>>,
    f16s: Vec<Vec<f16>>,
}

fn case(stream: &Arc<CudaStream>) -> Case {
    let lengths: Vec<usize> = sized(
        stream,
        vec![1, 3, 70_001, 200_003],
        vec![1, 3, 2_001, 70_001],
    );
    let table = TensorTable::per_tensor(&lengths).unwrap();
    let f32s: Vec<Vec<f32>> = lengths
        .iter()
        .map(|&l| draw(Dist::LogNormal, l, l as u64))
        .collect();
    let bf16s = lengths.iter().map(|&l| draw(Dist::Ties, l, 9)).collect();
    let mut f16s: Vec<Vec<f16>> = lengths.iter().map(|&l| draw(Dist::Normal, l, 5)).collect();
    f16s[2][7] = f16::INFINITY;
    f16s[3][100] = f16::NAN;
    Case {
        table,
        lengths,
        f32s,
        bf16s,
        f16s,
    }
}

#[test]
fn sharded_cuda_selection_is_the_unsharded_one() {
    let Some(stream) = gpu("sharded_cuda_selection_is_the_unsharded_one") else {
        return;
    };
    let c = case(&stream);
    let mut rng = StdRng::seed_from_u64(14);
    for world in [1usize, 2, 3, 5] {
        let random = random_layout(&mut rng, &c.lengths, world);
        let flat = flat(&c.table, world);
        compare(
            staged(&stream, world),
            &c.table,
            Scope::PerTensor,
            &random,
            &c.f32s,
            0.3,
        );
        compare(
            staged(&stream, world),
            &c.table,
            Scope::Global,
            &flat,
            &c.f32s,
            0.9,
        );
        compare(
            staged(&stream, world),
            &c.table,
            Scope::PerTensor,
            &flat,
            &c.bf16s,
            0.5,
        );
    }
    compare(
        staged(&stream, 2),
        &c.table,
        Scope::Global,
        &flat(&c.table, 2),
        &c.f16s,
        0.2,
    );
}

#[test]
fn sharded_cuda_bad_input_is_a_typed_error() {
    let Some(stream) = gpu("sharded_cuda_bad_input_is_a_typed_error") else {
        return;
    };
    let table = TensorTable::per_tensor(&[100, 7]).unwrap();
    // Ranks that disagree on the scope: every rank's construction fails.
    let errors = on_ranks(staged(&stream, 2), |rank, s, c| {
        let l = ShardLayout::flat(&table, 2, rank).unwrap();
        let scope = [Scope::PerTensor, Scope::Global][rank];
        CudaSelector::sharded(s, &table, scope, l, c).err()
    });
    assert!(
        errors
            .iter()
            .all(|e| matches!(e, Some(Error::ShardMismatch { .. }))),
        "{errors:?}"
    );
    // A layout of another table, a collective of another world: refused before any collective.
    let other = TensorTable::per_tensor(&[100, 8]).unwrap();
    let (s, c) = staged(&stream, 2).remove(1);
    let l = ShardLayout::flat(&table, 2, 1).unwrap();
    let e = CudaSelector::sharded(s, &other, Scope::Global, l.clone(), c).err();
    assert!(matches!(e, Some(Error::ShardLayout(_))), "{e:?}");
    let (s, c) = staged(&stream, 3).remove(1);
    let e = CudaSelector::sharded(s, &table, Scope::Global, l, c).err();
    assert!(matches!(e, Some(Error::ShardLayout(_))), "{e:?}");
}

/// The real NCCL code path: cudarc's bindings and `NcclCollective`.
#[cfg(feature = "nccl")]
#[test]
fn nccl_sharded_selection_is_the_unsharded_one() {
    use gradmask::cuda::{DeviceCollective, NcclCollective};
    use std::thread;
    let Some(stream) = gpu("nccl_sharded_selection_is_the_unsharded_one") else {
        return;
    };
    let id = match NcclCollective::unique_id() {
        Ok(id) => id,
        Err(e) => {
            eprintln!("skipping nccl_sharded_selection_is_the_unsharded_one: {e}");
            return;
        }
    };
    let c = case(&stream);
    // One thread per GPU: every communicator at once (on the stand-in, every rank's stream is
    // on its one device).
    for world in [1usize, 2, 3] {
        let streams: Vec<Arc<CudaStream>> = (0..world)
            .map(|_| stream.context().new_stream().unwrap())
            .collect();
        let comms = NcclCollective::from_streams(streams.clone()).unwrap();
        let ranks: Vec<Rank> = streams
            .into_iter()
            .zip(comms)
            .map(|(s, c)| (s, Box::new(c) as Box<dyn DeviceCollective>))
            .collect();
        let mut rng = StdRng::seed_from_u64(world as u64);
        let random = random_layout(&mut rng, &c.lengths, world);
        compare(ranks, &c.table, Scope::PerTensor, &random, &c.f32s, 0.3);
    }
    // One process per GPU: each rank joins with the unique id (here, threads of one process).
    let world = 2;
    let bytes = *id.internal();
    let ranks: Vec<Rank> = thread::scope(|s| {
        let handles: Vec<_> = (0..world)
            .map(|rank| {
                let stream = stream.context().new_stream().unwrap();
                s.spawn(move || {
                    let id = cudarc::nccl::Id::uninit(bytes);
                    let c = NcclCollective::from_rank(stream.clone(), rank, world, id).unwrap();
                    (stream, Box::new(c) as Box<dyn DeviceCollective>)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    compare(
        ranks,
        &c.table,
        Scope::Global,
        &flat(&c.table, world),
        &c.bf16s,
        0.5,
    );
}

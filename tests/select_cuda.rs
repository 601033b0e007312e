//! The CUDA selection against the CPU engine on identical inputs: thresholds, kept counts, lengths,
//! targets and non-finite counts bit-exact; sums of squares within `1e-9 * sum` (f64 atomics add in
//! another order). Every test prints why it skips where there is no GPU.

mod common;

use std::sync::Arc;

use common::cuda_steps::{gpu, sized, upload};
use common::{draw, Dist, FromF32, ALL_DISTS};
use cudarc::driver::{CudaStream, DeviceRepr};
use gradmask::cuda::{self, CudaSelector};
use gradmask::{CpuSelector, Error, Scope, Selection, TensorTable};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn assert_same(cpu: &Selection, gpu: &Selection, what: &str) {
    assert_eq!(cpu.groups.len(), gpu.groups.len(), "{what}");
    for (g, (c, d)) in cpu.groups.iter().zip(&gpu.groups).enumerate() {
        assert_eq!(
            (c.len, c.target, c.threshold_key, c.kept, c.non_finite),
            (d.len, d.target, d.threshold_key, d.kept, d.non_finite),
            "{what}: group {g}"
        );
        if c.sum_sq.is_finite() {
            assert!(
                (c.sum_sq - d.sum_sq).abs() <= 1e-9 * c.sum_sq,
                "{what}: group {g} sum_sq {} vs {}",
                c.sum_sq,
                d.sum_sq
            );
        }
    }
    assert_eq!(cpu.non_finite, gpu.non_finite, "{what}");
}

/// Runs both engines on `grads` and compares them.
fn compare<T: FromF32 + DeviceRepr>(
    stream: &Arc<CudaStream>,
    table: &TensorTable,
    scope: Scope,
    grads: &[Vec<T>],
    ratio: f64,
    capacity: Option<usize>,
    what: &str,
) {
    let views: Vec<&[T]> = grads.iter().map(|g| &g[..]).collect();
    let mut cpu = CpuSelector::new(table, scope);
    let want = cpu.select(&views, ratio).unwrap().clone();
    let mut gpu = match capacity {
        Some(cap) => {
            CudaSelector::with_candidate_capacity(stream.clone(), table, scope, cap).unwrap()
        }
        None => CudaSelector::new(stream.clone(), table, scope).unwrap(),
    };
    let device = upload(stream, grads);
    gpu.select(&device, ratio).unwrap();
    gpu.copy_stats_async().unwrap();
    assert_same(&want, &gpu.stats().unwrap(), what);
}

fn every_distribution<T: FromF32 + DeviceRepr>(test: &str) {
    let Some(stream) = gpu(test) else { return };
    // 1.37M entries per case on a GPU, 0.43M on the stand-in driver (288 cases per dtype).
    let lengths = sized(
        &stream,
        [0usize, 1, 3, 65_537, 300_001, 1_000_000],
        [0usize, 1, 3, 65_537, 100_003, 262_147],
    );
    let table = TensorTable::new(&lengths, &[0, 0, 1, 1, 2, 2])
        .unwrap()
        .with_dense(&[false, false, false, true, false, false])
        .unwrap();
    for (i, &dist) in ALL_DISTS.iter().enumerate() {
        let grads: Vec<Vec<T>> = lengths
            .iter()
            .enumerate()
            .map(|(t, &n)| draw(dist, n, 100 * i as u64 + t as u64))
            .collect();
        for scope in [Scope::PerTensor, Scope::Global, Scope::Groups] {
            for ratio in [0.0, 1e-6, 0.2, 0.5, 1.0 - 1e-6, 1.0] {
                for capacity in [None, Some(100)] {
                    compare(
                        &stream,
                        &table,
                        scope,
                        &grads,
                        ratio,
                        capacity,
                        &format!("{dist:?} {scope:?} r={ratio} cap={capacity:?}"),
                    );
                }
            }
        }
    }
}

#[test]
fn f32_every_distribution_scope_and_ratio_matches_the_cpu() {
    every_distribution::<f32>("f32_every_distribution_scope_and_ratio_matches_the_cpu");
}

#[test]
fn bf16_every_distribution_scope_and_ratio_matches_the_cpu() {
    every_distribution::<bf16>("bf16_every_distribution_scope_and_ratio_matches_the_cpu");
}

#[test]
fn f16_every_distribution_scope_and_ratio_matches_the_cpu() {
    every_distribution::<f16>("f16_every_distribution_scope_and_ratio_matches_the_cpu");
}

/// 300 tensors, 4K to 4M entries (log-uniform lengths) and one of 50M, one launch per pass over
/// all of them. On the stand-in driver: 60 tensors of 4K to 256K and one of 2^24 + 1, which is
/// also a group of its own at per-tensor scope.
#[test]
fn three_hundred_mixed_tensors_match_the_cpu() {
    let Some(stream) = gpu("three_hundred_mixed_tensors_match_the_cpu") else {
        return;
    };
    let (count, top, big) = sized(&stream, (300, 22.0, 50_000_000), (60, 18.0, (1 << 24) + 1));
    let mut rng = StdRng::seed_from_u64(300);
    let mut lengths: Vec<usize> = (0..count)
        .map(|_| 2f64.powf(rng.random_range(12.0..top)) as usize | 1)
        .collect();
    lengths[7] = big;
    lengths[count / 2] = 4096;
    let groups: Vec<u32> = (0..count as u32).map(|t| t / 10).collect();
    let table = TensorTable::new(&lengths, &groups).unwrap();
    let grads = common::llama_gradients(
        &lengths
            .iter()
            .map(|&n| (String::new(), n))
            .collect::<Vec<_>>(),
        3,
    );
    for scope in [Scope::PerTensor, Scope::Global, Scope::Groups] {
        compare(
            &stream,
            &table,
            scope,
            &grads,
            0.2,
            None,
            &format!("{count} tensors {scope:?}"),
        );
    }
}

#[test]
fn the_same_input_twice_gives_identical_output() {
    let Some(stream) = gpu("the_same_input_twice_gives_identical_output") else {
        return;
    };
    let lengths = [2_000_003usize, 4096, 77];
    let table = TensorTable::per_tensor(&lengths).unwrap();
    let grads: Vec<Vec<f32>> = lengths
        .iter()
        .map(|&n| draw(Dist::LogNormal, n, n as u64))
        .collect();
    let device = upload(&stream, &grads);
    let mut gpu = CudaSelector::new(stream.clone(), &table, Scope::Global).unwrap();
    gpu.select(&device, 0.3).unwrap();
    gpu.copy_stats_async().unwrap();
    let first = gpu.stats().unwrap();
    gpu.select(&device, 0.3).unwrap();
    gpu.copy_stats_async().unwrap();
    let second = gpu.stats().unwrap();
    assert_eq!(
        first
            .groups
            .iter()
            .map(|g| (g.threshold_key, g.kept))
            .collect::<Vec<_>>(),
        second
            .groups
            .iter()
            .map(|g| (g.threshold_key, g.kept))
            .collect::<Vec<_>>()
    );
    assert_eq!(first.non_finite, second.non_finite);
}

#[test]
fn a_planted_nan_is_reported() {
    let Some(stream) = gpu("a_planted_nan_is_reported") else {
        return;
    };
    let table = TensorTable::per_tensor(&[100_000, 5]).unwrap();
    let mut a = draw::<f32>(Dist::Normal, 100_000, 1);
    a[4242] = f32::NAN;
    let b = draw::<f32>(Dist::Normal, 5, 2);
    let mut gpu = CudaSelector::new(stream.clone(), &table, Scope::PerTensor).unwrap();
    gpu.select(&upload(&stream, &[a, b]), 0.2).unwrap();
    gpu.copy_stats_async().unwrap();
    let stats = gpu.stats().unwrap();
    assert_eq!(stats.non_finite, 1);
    assert_eq!(stats.groups[0].non_finite, 1);
    assert_eq!(stats.groups[1].non_finite, 0);
}

#[test]
fn bad_inputs_get_typed_errors() {
    let Some(stream) = gpu("bad_inputs_get_typed_errors") else {
        return;
    };
    let table = TensorTable::per_tensor(&[10, 20]).unwrap();
    let mut gpu = CudaSelector::new(stream.clone(), &table, Scope::PerTensor).unwrap();
    let short = upload(&stream, &[vec![0f32; 10], vec![0f32; 19]]);
    assert!(matches!(
        gpu.select(&short, 0.2),
        Err(Error::LengthMismatch { tensor: 1, .. })
    ));
    assert!(matches!(
        gpu.select(&short[..1], 0.2),
        Err(Error::CountMismatch { .. })
    ));
    assert!(matches!(
        gpu.select(&short, f64::NAN),
        Err(Error::InvalidConfig { .. })
    ));
    // Above the limit, a block's u32 count of its candidates could wrap (issue 11).
    let too_many = usize::try_from(gradmask::tuning::MAX_CUDA_CANDIDATES + 1).unwrap();
    assert!(matches!(
        CudaSelector::with_candidate_capacity(stream, &table, Scope::Global, too_many),
        Err(Error::TooLarge(_))
    ));
}

/// Runs everywhere: without a GPU, the entry points answer with a typed error instead of panicking.
#[test]
fn without_a_gpu_the_entry_points_return_typed_errors() {
    match cuda::default_stream(0) {
        Ok(_) => eprintln!("a GPU is present: the typed-error path is not exercised here"),
        Err(Error::NoDriver | Error::NoDevice { .. } | Error::KernelsNotBuilt) => {}
        Err(other) => panic!("unexpected error {other:?}"),
    }
    assert!(matches!(
        cuda::default_stream(usize::MAX),
        Err(Error::NoDriver | Error::NoDevice { .. } | Error::KernelsNotBuilt)
    ));
}

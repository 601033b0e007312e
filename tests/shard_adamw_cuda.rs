//! The sharded CUDA optimizer (`CudaGmtAdamW::sharded`) against the unsharded CPU engine: 1 to 4
//! ranks as threads, each on its own stream of the one device, joined by the host-staged test
//! double of `DeviceCollective` (the NCCL path of the same all-reduces is `tests/shard_cuda.rs`'s).
//! Random layouts (empty and one-entry slices, cuts inside GPU chunks) and the flat one; every
//! precision, GMT and the random mask, every scope, frozen tensors, a NaN and an Inf step.
//!
//! Every rank's report must be the unsharded CPU step's (kept counts, thresholds, skip flag,
//! step exactly; sums of g^2 and the norm to 1e-9: the device adds them in another order), and
//! its parameters, m, v and master weights bit for bit the CPU's over its slices. No clipping
//! here: the clipping factor comes from the device's sum, which may differ in its last bit.

mod common;

use std::ops::Range;

use common::adamw_ref::{bits, draw_grads, draw_params_as, state, views, views_mut, State};
use common::cuda_shards::{flat, on_ranks, staged, Rank};
use common::cuda_steps::{assert_same_report, gpu, gpu_state, upload, Combo};
use common::cuda_steps::{config, F32Bf16, Master, Stochastic, F32F32};
use common::shards::random_layout;
use common::{Dist, FromF32};
use cudarc::driver::CudaStream;
use gradmask::cuda::CudaGmtAdamW;
use gradmask::{AdamWConfig, Error, GmtAdamW, MaskConfig, MaskMode, MaskStability};
use gradmask::{MaskedUpdate, Scope, ShardLayout, Shards, StepReport, TensorTable};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::Arc;

/// Sizes 0, 1, 3, 4 (dense), and tensors spanning 2 GPU chunks (65536 entries).
const LENGTHS: [usize; 6] = [0, 1, 3, 4, 65_539, 100_003];
const DISTS: [Dist; 4] = [Dist::Normal, Dist::LogNormal, Dist::Ties, Dist::Outlier];

fn table() -> TensorTable {
    TensorTable::new(&LENGTHS, &[0, 0, 1, 1, 2, 2])
        .unwrap()
        .with_dense(&[false, false, false, true, false, false])
        .unwrap()
}

/// One comparison: the unsharded CPU engine and `layout.len()` CUDA ranks, `steps` steps.
struct Case {
    mask: MaskConfig,
    mode: MaskMode,
    frozen: Option<Vec<bool>>,
    /// Steps (0-based) whose gradients get a NaN (tensor 5) or an Inf (dense tensor 3).
    poison: Vec<(u64, f32)>,
    steps: u64,
    stability: bool,
}

impl Case {
    fn gmt(mask_ratio: f64, scope: Scope, masked: MaskedUpdate) -> Self {
        Case {
            mask: MaskConfig {
                mask_ratio,
                scope,
                masked,
            },
            mode: MaskMode::Gmt,
            frozen: None,
            poison: Vec::new(),
            steps: 3,
            stability: false,
        }
    }
}

fn grads_of<C: Combo>(case: &Case, step: u64) -> Vec<Vec<C::G>> {
    let mut grads: Vec<Vec<C::G>> = draw_grads(&LENGTHS, &DISTS, 7, step);
    for &(_, value) in case.poison.iter().filter(|(at, _)| *at == step) {
        let t = if value.is_nan() { 5 } else { 3 };
        grads[t][1] = C::G::from_f32(value);
    }
    grads
}

/// Each tensor's slice `ranges[t]`, owned.
fn mine<T: Clone>(data: &[Vec<T>], ranges: &[Range<usize>]) -> Vec<Vec<T>> {
    data.iter()
        .zip(ranges)
        .map(|(d, r)| d[r.clone()].to_vec())
        .collect()
}

/// A flat state in table order cut down to a rank's slices, in the same order.
fn slice_state(full: &State, ranges: &[Range<usize>]) -> State {
    let offsets = table().offsets().to_vec();
    let cut = |flat: &[u32]| -> Vec<u32> {
        ranges
            .iter()
            .enumerate()
            .flat_map(|(t, r)| {
                let at = offsets[t] as usize;
                flat[at + r.start..at + r.end].to_vec()
            })
            .collect()
    };
    State {
        params: cut(&full.params),
        m: cut(&full.m),
        v: cut(&full.v),
        master: full.master.as_deref().map(cut),
        step: full.step,
    }
}

/// What one engine saw after each step.
#[derive(Default)]
struct Run {
    reports: Vec<StepReport>,
    states: Vec<State>,
    stability: Vec<Option<MaskStability>>,
    comm_calls: Vec<u64>,
}

fn cpu_run<C: Combo>(case: &Case) -> Run {
    let mut cpu = GmtAdamW::new(table(), config(), case.mask)
        .unwrap()
        .with_mask_mode(case.mode);
    if let Some(frozen) = &case.frozen {
        cpu.set_frozen(frozen).unwrap();
    }
    cpu.track_stability(case.stability);
    let mut host = params::<C>();
    let mut run = Run::default();
    for step in 0..case.steps {
        let grads = grads_of::<C>(case, step);
        let lr = 1e-3 * (1.0 + step as f64);
        let report = C::cpu(&mut cpu, &mut views_mut(&mut host), &views(&grads), lr).unwrap();
        run.reports.push(report);
        run.states.push(state(&cpu, &host));
        run.stability.push(cpu.stability().cloned());
    }
    run
}

fn params<C: Combo>() -> Vec<Vec<C::P>> {
    draw_params_as::<C::P>(&LENGTHS, 1)
}

/// One rank's run on its slices.
fn gpu_rank<C: Combo>(
    case: &Case,
    layout: &[Vec<Range<usize>>],
    rank: usize,
    stream: Arc<CudaStream>,
    collective: Box<dyn gradmask::cuda::DeviceCollective>,
) -> Run {
    let l = ShardLayout::new(&table(), layout, rank).unwrap();
    let mut opt =
        CudaGmtAdamW::sharded(stream.clone(), table(), config(), case.mask, l, collective)
            .unwrap()
            .with_mask_mode(case.mode);
    if let Some(frozen) = &case.frozen {
        opt.set_frozen(frozen).unwrap();
    }
    opt.track_stability(case.stability).unwrap();
    let mut device = upload(&stream, &mine(&params::<C>(), &layout[rank]));
    let mut run = Run::default();
    for step in 0..case.steps {
        let grads = upload(&stream, &mine(&grads_of::<C>(case, step), &layout[rank]));
        let lr = 1e-3 * (1.0 + step as f64);
        C::gpu(&mut opt, &mut device, &grads, lr).unwrap();
        run.reports.push(opt.last_report().unwrap());
        run.comm_calls.push(opt.comm_stats().calls);
        run.states.push(gpu_state(&mut opt, &device));
        run.stability.push(opt.stability().unwrap().cloned());
    }
    run
}

/// Runs `case` on the CPU and on `layout.len()` ranks; asserts every rank's reports, states and
/// stability are the CPU's. Returns each rank's all-reduce calls per step.
fn compare<C: Combo>(
    stream: &Arc<CudaStream>,
    case: &Case,
    layout: &[Vec<Range<usize>>],
    what: &str,
) -> Vec<Vec<u64>> {
    compare_on::<C>(staged(stream, layout.len()), case, layout, what)
}

/// [`compare`] on the given ranks (one per layout entry).
fn compare_on<C: Combo>(
    ranks: Vec<Rank>,
    case: &Case,
    layout: &[Vec<Range<usize>>],
    what: &str,
) -> Vec<Vec<u64>> {
    let want = cpu_run::<C>(case);
    let ranks = on_ranks(ranks, |rank, s, c| gpu_rank::<C>(case, layout, rank, s, c));
    for (rank, got) in ranks.iter().enumerate() {
        for step in 0..case.steps as usize {
            let at = format!(
                "{}, {what}, rank {rank}/{}, step {step}",
                C::NAME,
                layout.len()
            );
            assert_same_report(&want.reports[step], &got.reports[step], &at);
            let expected = slice_state(&want.states[step], &layout[rank]);
            assert_eq!(got.states[step], expected, "{at}: state");
        }
    }
    // Mask stability per rank counts its own slices (as on the CPU): added over the ranks, the
    // unsharded counts.
    for step in 0..case.steps as usize {
        let mut added = ranks[0].stability[step].clone();
        for other in &ranks[1..] {
            if let (Some(sum), Some(o)) = (&mut added, &other.stability[step]) {
                assert_eq!((sum.step, sum.has_previous), (o.step, o.has_previous));
                for (total, t) in sum.tensors.iter_mut().zip(&o.tensors) {
                    total.kept += t.kept;
                    total.kept_before += t.kept_before;
                }
            }
        }
        let at = format!("{}, {what}, step {step}: stability", C::NAME);
        assert_eq!(added, want.stability[step], "{at}");
    }
    ranks.into_iter().map(|r| r.comm_calls).collect()
}

fn random(world: usize, seed: u64) -> Vec<Vec<Range<usize>>> {
    random_layout(&mut StdRng::seed_from_u64(seed), &LENGTHS, world)
}

#[test]
fn sharded_gmt_steps_match_the_unsharded_cpu_bit_for_bit() {
    let Some(stream) = gpu("sharded_gmt_steps_match_the_unsharded_cpu_bit_for_bit") else {
        return;
    };
    for world in [1usize, 2, 3] {
        let layout = random(world, 40 + world as u64);
        let case = Case::gmt(0.3, Scope::PerTensor, MaskedUpdate::ZeroGrad);
        let calls = compare::<F32F32>(&stream, &case, &layout, "gmt per-tensor 0.3");
        // The selection's all-reduces (f32: pass 1's histograms and sums, then 2 digits).
        assert!(calls.iter().flatten().all(|&c| c == 4), "{calls:?}");
        let mut case = Case::gmt(0.5, Scope::Global, MaskedUpdate::Freeze);
        case.poison = vec![(1, f32::NAN)];
        compare::<F32Bf16>(&stream, &case, &layout, "gmt global 0.5 freeze, NaN");
    }
    let layout = flat(&table(), 4);
    let mut case = Case::gmt(0.2, Scope::Groups, MaskedUpdate::ZeroGrad);
    case.poison = vec![(2, f32::INFINITY)];
    compare::<Master>(&stream, &case, &layout, "gmt groups 0.2, Inf");
    let case = Case::gmt(0.0, Scope::PerTensor, MaskedUpdate::ZeroGrad);
    compare::<Stochastic>(&stream, &case, &random(3, 7), "ratio 0");
}

#[test]
fn sharded_random_mask_frozen_and_stability_match_the_cpu() {
    let Some(stream) = gpu("sharded_random_mask_frozen_and_stability_match_the_cpu") else {
        return;
    };
    for world in [2usize, 3] {
        let layout = random(world, 50 + world as u64);
        let mut case = Case::gmt(0.4, Scope::PerTensor, MaskedUpdate::ZeroGrad);
        case.mode = MaskMode::Random { seed: 99 };
        case.frozen = Some(vec![false, true, false, false, true, false]);
        let calls = compare::<F32F32>(&stream, &case, &layout, "random 0.4, frozen");
        // The selection's 4, then the kept counts'.
        assert!(calls.iter().flatten().all(|&c| c == 5), "{calls:?}");
        let mut case = Case::gmt(0.3, Scope::Global, MaskedUpdate::ZeroGrad);
        case.stability = true;
        case.poison = vec![(1, f32::NAN)];
        case.steps = 4;
        let calls = compare::<Stochastic>(&stream, &case, &layout, "stability, NaN");
        // bf16: pass 1 (2) and one digit; stability costs no collective.
        assert!(calls.iter().flatten().all(|&c| c == 3), "{calls:?}");
    }
}

/// The optimizer's own all-reduce (the random mask's kept counts) and stability through
/// the real NCCL code path: cudarc's bindings and `NcclCollective` (the stand-in's NCCL here).
#[cfg(feature = "nccl")]
#[test]
fn nccl_sharded_steps_match_the_cpu() {
    use gradmask::cuda::{DeviceCollective, NcclCollective};
    let Some(stream) = gpu("nccl_sharded_steps_match_the_cpu") else {
        return;
    };
    if let Err(e) = NcclCollective::unique_id() {
        eprintln!("skipping nccl_sharded_steps_match_the_cpu: {e}");
        return;
    }
    let world = 3;
    let streams: Vec<Arc<CudaStream>> = (0..world)
        .map(|_| stream.context().new_stream().unwrap())
        .collect();
    let ranks: Vec<Rank> = streams
        .clone()
        .into_iter()
        .zip(NcclCollective::from_streams(streams).unwrap())
        .map(|(s, c)| (s, Box::new(c) as Box<dyn DeviceCollective>))
        .collect();
    let mut case = Case::gmt(0.4, Scope::Groups, MaskedUpdate::ZeroGrad);
    case.mode = MaskMode::Random { seed: 5 };
    case.stability = true;
    let calls = compare_on::<F32Bf16>(ranks, &case, &random(world, 70), "nccl, random, stability");
    // bf16: the selection's 3, then the kept counts'.
    assert!(calls.iter().flatten().all(|&c| c == 4), "{calls:?}");
}

#[test]
fn sharded_checkpoints_resume_bit_exact_and_refuse_another_shard() {
    let Some(stream) = gpu("sharded_checkpoints_resume_bit_exact_and_refuse_another_shard") else {
        return;
    };
    let dir = tempdir("sharded_checkpoints");
    let layout = random(3, 60);
    let case = Case::gmt(0.3, Scope::PerTensor, MaskedUpdate::ZeroGrad);
    let want = cpu_run::<Master>(&case);
    let got = on_ranks(staged(&stream, 3), |rank, s, c| {
        // Two steps, save, drop; a new optimizer loads and takes the third.
        let path = dir.join(format!("rank{rank}.safetensors"));
        let l = ShardLayout::new(&table(), &layout, rank).unwrap();
        let mut opt = CudaGmtAdamW::sharded(s.clone(), table(), config(), case.mask, l, c).unwrap();
        let mut device = upload(&s, &mine(&params::<Master>(), &layout[rank]));
        for step in 0..2 {
            let grads = upload(&s, &mine(&grads_of::<Master>(&case, step), &layout[rank]));
            Master::gpu(&mut opt, &mut device, &grads, 1e-3 * (1.0 + step as f64)).unwrap();
        }
        opt.save(&path).unwrap();
        drop(opt);
        (path, common::cuda_steps::download(&s, &device))
    });
    let resumed = on_ranks(staged(&stream, 3), |rank, s, c| {
        let l = ShardLayout::new(&table(), &layout, rank).unwrap();
        let mut opt = CudaGmtAdamW::sharded(s.clone(), table(), config(), case.mask, l, c).unwrap();
        // Another rank's file is refused, and changes nothing.
        let other = &got[(rank + 1) % 3].0;
        let e = opt.load(other).err();
        assert!(matches!(e, Some(Error::Checkpoint { .. })), "{e:?}");
        opt.load(&got[rank].0).unwrap();
        let mut device = upload(&s, &got[rank].1);
        let grads = upload(&s, &mine(&grads_of::<Master>(&case, 2), &layout[rank]));
        Master::gpu(&mut opt, &mut device, &grads, 3e-3).unwrap();
        let report = opt.last_report().unwrap();
        (report, gpu_state(&mut opt, &device))
    });
    for (rank, (report, state)) in resumed.iter().enumerate() {
        let at = format!("resumed rank {rank}");
        assert_same_report(&want.reports[2], report, &at);
        assert_eq!(*state, slice_state(&want.states[2], &layout[rank]), "{at}");
    }
    // The CPU engine's sharded ranks read the CUDA ranks' files and take the third step alike.
    let cpu = common::shards::run_ranks(3, |rank, c| {
        let l = ShardLayout::new(&table(), &layout, rank).unwrap();
        let shards = Shards::new(l, c).unwrap();
        let mut opt = GmtAdamW::sharded(table(), config(), case.mask, shards).unwrap();
        opt.load(&got[rank].0).unwrap();
        let mut p = got[rank].1.clone();
        let g = mine(&grads_of::<Master>(&case, 2), &layout[rank]);
        let report = Master::cpu(&mut opt, &mut views_mut(&mut p), &views(&g), 3e-3).unwrap();
        (report, state(&opt, &p))
    });
    for (rank, (report, state)) in cpu.iter().enumerate() {
        let at = format!("CPU rank {rank} resumed from the CUDA rank's file");
        assert_same_report(&want.reports[2], report, &at);
        assert_eq!(*state, slice_state(&want.states[2], &layout[rank]), "{at}");
    }
    // An unsharded optimizer refuses a rank's file.
    let mut whole = CudaGmtAdamW::new(stream.clone(), table(), config(), case.mask).unwrap();
    let e = whole.load(&got[0].0).err();
    assert!(matches!(e, Some(Error::Checkpoint { .. })), "{e:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sharded_bad_input_is_a_typed_error_and_changes_nothing() {
    let Some(stream) = gpu("sharded_bad_input_is_a_typed_error_and_changes_nothing") else {
        return;
    };
    let mask = MaskConfig::default();
    // Ranks that disagree on the AdamW configuration: every rank's construction fails.
    let errors = on_ranks(staged(&stream, 2), |rank, s, c| {
        let l = ShardLayout::flat(&table(), 2, rank).unwrap();
        let adamw = AdamWConfig {
            beta1: [0.9, 0.8][rank],
            ..config()
        };
        CudaGmtAdamW::sharded(s, table(), adamw, mask, l, c).err()
    });
    assert!(
        errors
            .iter()
            .all(|e| matches!(e, Some(Error::ShardMismatch { .. }))),
        "{errors:?}"
    );
    // A layout of another table: refused before any collective.
    let other = TensorTable::per_tensor(&[5, 6]).unwrap();
    let (s, c) = staged(&stream, 2).remove(0);
    let l = ShardLayout::flat(&other, 2, 0).unwrap();
    let e = CudaGmtAdamW::sharded(s, table(), config(), mask, l, c).err();
    assert!(matches!(e, Some(Error::ShardLayout(_))), "{e:?}");
    // Buffers of other lengths than the rank's slices: a length mismatch, nothing enqueued.
    let layout = flat(&table(), 1);
    let mut runs = on_ranks(staged(&stream, 1), |rank, s, c| {
        let l = ShardLayout::new(&table(), &layout, rank).unwrap();
        CudaGmtAdamW::sharded(s, table(), config(), mask, l, c).unwrap()
    });
    let mut opt = runs.remove(0);
    let s = opt.stream().clone();
    let mut lengths = LENGTHS.to_vec();
    lengths[5] += 1;
    let p0: Vec<Vec<f32>> = lengths.iter().map(|&n| vec![0.5; n]).collect();
    let mut p = upload(&s, &p0);
    let g = upload(&s, &p0);
    let e = opt.step(&mut p, &g, 1e-3).err();
    assert!(matches!(e, Some(Error::LengthMismatch { .. })), "{e:?}");
    assert_eq!(opt.step_count().unwrap(), 0);
    let (m, _) = opt.moments_to_host().unwrap();
    assert!(bits(&m).iter().all(|&b| b == 0));
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gradmask-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

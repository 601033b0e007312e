//! `gradmask::candle::GmtAdamW` with `Config::with_shards(n)`: n ranks as threads, each stepping
//! its slice of the vars, give the vars, moments, master weights, reports and mask stability of
//! the unsharded adapter bit for bit (f32 and bf16; GMT, random mask, frozen and dense vars, a
//! missing gradient; more ranks than some vars have entries, and more than all of them). Per-rank
//! checkpoints resume exactly; one of another rank count is refused and changes nothing.
#![cfg(feature = "candle")]

mod common;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;
use common::candle_vars::{normal, VARS};
use gradmask::candle::{Config, GmtAdamW};
use gradmask::{AdamWConfig, Error, MaskConfig, MaskMode, MaskedUpdate, Scope};

fn vars(sizes: &[(&str, usize)], dtype: DType) -> Vec<(String, Var)> {
    let var = |i: usize, len: usize| {
        let t = Tensor::from_vec(normal(len, 100 + i as u64, 1.0), len, &Device::Cpu).unwrap();
        Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap()
    };
    let named = sizes.iter().enumerate();
    named
        .map(|(i, &(n, len))| (n.to_string(), var(i, len)))
        .collect()
}

/// Seeded gradients of step `step` (none for `missing`).
fn grads(vars: &[(String, Var)], step: u64, missing: Option<usize>) -> GradStore {
    let mut store = GradStore::default();
    for (i, (_, var)) in vars.iter().enumerate().filter(|(i, _)| Some(*i) != missing) {
        let g = normal(var.elem_count(), 1000 * step + i as u64, 1e-2);
        let t = Tensor::from_vec(g, var.elem_count(), &Device::Cpu).unwrap();
        store.insert(var.as_tensor(), t.to_dtype(var.dtype()).unwrap());
    }
    store
}

/// Every var's bits (as f32: bf16 converts exactly).
fn var_bits(vars: &[(String, Var)]) -> Vec<Vec<u32>> {
    let f32s = |v: &Var| v.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
    vars.iter()
        .map(|(_, v)| f32s(v).iter().map(|x| x.to_bits()).collect())
        .collect()
}

/// Everything the optimizer can tell, as text (bits through `{:?}` of f32 are exact).
fn state(opt: &mut GmtAdamW, vars: &[(String, Var)]) -> String {
    let report = opt.last_report().ok();
    let stability = opt.stability().unwrap().cloned();
    let (m, v) = opt.moments_to_host().unwrap();
    let master = opt.master_to_host().unwrap();
    let counts = opt.step_count().unwrap();
    let varbits = var_bits(vars);
    format!("{report:?}\n{stability:?}\n{m:?}\n{v:?}\n{master:?}\n{counts}\n{varbits:?}")
}

/// Steps an unsharded and an n-rank optimizer 3 times on the same gradients (each on its own
/// copy of the vars) and compares everything after each step.
fn compare(sizes: &[(&str, usize)], config: &Config, dtype: DType, shards: usize) {
    let label = format!("{config:?} {dtype:?} {shards} ranks");
    let (one, many) = (vars(sizes, dtype), vars(sizes, dtype));
    let mut want = GmtAdamW::with_config(one.clone(), config.clone()).unwrap();
    let mut got = GmtAdamW::with_config(many.clone(), config.clone().with_shards(shards)).unwrap();
    assert_eq!((want.shards(), got.shards()), (1, shards));
    want.track_stability(true).unwrap();
    got.track_stability(true).unwrap();
    for step in 1..=3 {
        let missing = (step == 2).then_some(1);
        want.step(&grads(&one, step, missing)).unwrap();
        got.step(&grads(&many, step, missing)).unwrap();
        let (w, g) = (state(&mut want, &one), state(&mut got, &many));
        assert!(
            w == g,
            "{label}: step {step}:\nwant {w:.300}\n got {g:.300}"
        );
    }
}

fn configs() -> Vec<Config> {
    let adamw = AdamWConfig {
        weight_decay: 0.01,
        max_grad_norm: Some(0.05),
        ..AdamWConfig::default()
    };
    let mask = |mask_ratio, scope, masked| MaskConfig {
        mask_ratio,
        scope,
        masked,
    };
    vec![
        Config::new(adamw, mask(0.5, Scope::PerTensor, MaskedUpdate::ZeroGrad)),
        Config::new(adamw, mask(0.3, Scope::Groups, MaskedUpdate::Freeze))
            .with_dense(|n| n.ends_with("layernorm.weight"))
            .with_frozen(|n| n.contains("o_proj")),
        Config::new(adamw, mask(0.5, Scope::Global, MaskedUpdate::ZeroGrad))
            .with_mask_mode(MaskMode::Random { seed: 7 }),
        Config::new(adamw, MaskConfig::default()).with_lr(3e-2),
    ]
}

#[test]
fn sharded_steps_equal_the_unsharded_adapter_bit_for_bit() {
    for config in configs() {
        for shards in [2, 3, 7] {
            compare(&VARS, &config, DType::F32, shards);
        }
        compare(&VARS, &config, DType::BF16, 3);
    }
    // More ranks than entries: some ranks hold nothing at all.
    let tiny = [("model.layers.0.a", 3), ("model.layers.1.b", 1)];
    compare(&tiny, &configs()[0], DType::F32, 6);
}

#[test]
fn per_rank_checkpoints_resume_exactly_and_need_the_same_ranks() {
    let config = configs()[1].clone();
    let dir = std::env::temp_dir().join(format!("gradmask-candle-shards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("opt.bin");
    let (run, resumed) = (vars(&VARS, DType::BF16), vars(&VARS, DType::BF16));
    let mut opt = GmtAdamW::with_config(run.clone(), config.clone().with_shards(3)).unwrap();
    for step in 1..=2 {
        opt.step(&grads(&run, step, None)).unwrap();
    }
    opt.save(&path).unwrap();
    let exists = |r: usize| dir.join(format!("opt.bin.rank{r}")).exists();
    assert!(exists(0) && exists(2) && !exists(3) && !path.exists());

    // Another rank count: refused, and the optimizer is as it was (fresh).
    for other in [1, 2, 4] {
        let fresh = vars(&VARS, DType::BF16);
        let config = config.clone().with_shards(other);
        let mut wrong = GmtAdamW::with_config(fresh.clone(), config).unwrap();
        let before = state(&mut wrong, &fresh);
        let err = wrong.load(&path).unwrap_err();
        assert!(
            matches!(err, Error::Checkpoint { .. }),
            "{other} ranks: {err}"
        );
        let after = state(&mut wrong, &fresh);
        assert!(
            after == before,
            "{other} ranks: a refused load changed the state"
        );
    }

    // Rank 2's file missing: ranks 0 and 1 alone would load, but a load is all or nothing.
    for r in 0..2 {
        let from = dir.join(format!("opt.bin.rank{r}"));
        std::fs::copy(from, dir.join(format!("partial.bin.rank{r}"))).unwrap();
    }
    let fresh = vars(&VARS, DType::BF16);
    let mut three = GmtAdamW::with_config(fresh.clone(), config.clone().with_shards(3)).unwrap();
    let before = state(&mut three, &fresh);
    let err = three.load(&dir.join("partial.bin")).unwrap_err();
    assert!(matches!(err, Error::Checkpoint { .. }), "{err}");
    assert!(
        state(&mut three, &fresh) == before,
        "a failed load changed ranks 0 and 1"
    );

    // The same rank count, with the weights as they were: the next steps are bit for bit.
    for ((_, mine), (_, theirs)) in resumed.iter().zip(&run) {
        mine.set(theirs.as_tensor()).unwrap();
    }
    let mut again = GmtAdamW::with_config(resumed.clone(), config.with_shards(3)).unwrap();
    again.load(&path).unwrap();
    for step in 3..=4 {
        opt.step(&grads(&run, step, None)).unwrap();
        again.step(&grads(&resumed, step, None)).unwrap();
        let (w, g) = (state(&mut opt, &run), state(&mut again, &resumed));
        assert!(
            w == g,
            "step {step} after the load:\nwant {w:.300}\n got {g:.300}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn zero_ranks_are_rejected() {
    let config = Config::default().with_shards(0);
    let err = GmtAdamW::with_config(vars(&VARS, DType::F32), config).err();
    assert!(
        matches!(err, Some(Error::InvalidConfig { name: "shards", .. })),
        "{err:?}"
    );
}

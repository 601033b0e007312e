//! `gradmask::candle` on the CPU against the engine it drives: the same gradients give the same
//! vars, moments, master weights and reports as `gradmask::GmtAdamW` on host slices, bit for bit,
//! for every scope, masked-update policy, mask mode, clipping, dense and frozen vars, a missing
//! gradient, f32 and bf16 vars, and accumulation (which masks the sum, not each micro-batch).
#![cfg(feature = "candle")]

mod common;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;
use common::candle_vars::{normal, LAYER_IDS, VARS};
use gradmask::candle::{Config, GmtAdamW};
use gradmask::{AdamWConfig, MaskConfig, MaskMode, MaskedUpdate, Scope, TensorTable};
use half::bf16;

fn vars(dtype: DType) -> Vec<(String, Var)> {
    VARS.iter()
        .enumerate()
        .map(|(i, &(name, len))| {
            let t = Tensor::from_vec(normal(len, 100 + i as u64, 1.0), len, &Device::Cpu).unwrap();
            (
                name.to_string(),
                Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap(),
            )
        })
        .collect()
}

/// Seeded gradients of step `step`; `missing` has none.
fn grads(vars: &[(String, Var)], step: u64, missing: Option<usize>) -> (GradStore, Vec<Vec<f32>>) {
    let mut store = GradStore::default();
    let mut host = Vec::new();
    for (i, (_, var)) in vars.iter().enumerate() {
        let g = normal(var.elem_count(), 1000 * step + i as u64, 1e-2);
        let t = Tensor::from_vec(g, var.elem_count(), &Device::Cpu).unwrap();
        let t = t.to_dtype(var.dtype()).unwrap();
        host.push(t.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap());
        if Some(i) != missing {
            store.insert(var.as_tensor(), t);
        }
    }
    (store, host)
}

fn values<T: candle_core::WithDType>(vars: &[(String, Var)]) -> Vec<Vec<T>> {
    vars.iter()
        .map(|(_, v)| v.as_tensor().to_vec1::<T>().unwrap())
        .collect()
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// Runs 3 steps through the adapter and the engine and compares everything after each.
fn compare(config: Config, dtype: DType, missing: Option<usize>) {
    let label = format!("{config:?} {dtype:?} missing {missing:?}");
    let list = vars(dtype);
    let names: Vec<&str> = VARS.iter().map(|v| v.0).collect();
    let dense: Vec<bool> = names.iter().map(|n| (config.dense)(n)).collect();
    let frozen: Vec<bool> = names.iter().map(|n| (config.frozen)(n)).collect();
    let lengths: Vec<usize> = VARS.iter().map(|v| v.1).collect();
    let table = TensorTable::new(&lengths, &LAYER_IDS)
        .unwrap()
        .with_dense(&dense)
        .unwrap();
    let mut engine = gradmask::GmtAdamW::new(table, config.adamw, config.mask)
        .unwrap()
        .with_mask_mode(config.mode);
    let mut params_f32: Vec<Vec<f32>> = values::<f32>(&vars(DType::F32));
    let mut params_bf16: Vec<Vec<bf16>> = values::<bf16>(&vars(DType::BF16));
    let lr = config.lr;
    let mut opt = GmtAdamW::with_config(list.clone(), config).unwrap();
    for step in 1..=3 {
        let (store, host) = grads(&list, step, missing);
        opt.step(&store).unwrap();
        let mut frozen_now = frozen.clone();
        let mut host = host;
        if let Some(m) = missing {
            frozen_now[m] = true;
            host[m].iter_mut().for_each(|g| *g = 0.0);
        }
        engine.set_frozen(&frozen_now).unwrap();
        let report = if dtype == DType::BF16 {
            let g: Vec<Vec<bf16>> = host
                .iter()
                .map(|g| g.iter().map(|&x| bf16::from_f32(x)).collect())
                .collect();
            let gs: Vec<&[bf16]> = g.iter().map(Vec::as_slice).collect();
            let mut ps: Vec<&mut [bf16]> = params_bf16.iter_mut().map(Vec::as_mut_slice).collect();
            engine.step_bf16_master(&mut ps, &gs, lr).unwrap()
        } else {
            let gs: Vec<&[f32]> = host.iter().map(Vec::as_slice).collect();
            let mut ps: Vec<&mut [f32]> = params_f32.iter_mut().map(Vec::as_mut_slice).collect();
            engine.step(&mut ps, &gs, lr).unwrap()
        };
        let got = opt.last_report().unwrap();
        assert_eq!(
            format!("{got:?}"),
            format!("{report:?}"),
            "{label}: step {step} report"
        );
        if dtype == DType::BF16 {
            assert_eq!(
                values::<bf16>(&list),
                params_bf16,
                "{label}: step {step} vars"
            );
            let master = opt.master_to_host().unwrap().unwrap();
            assert_eq!(
                bits(&master),
                bits(engine.master().unwrap()),
                "{label}: master"
            );
        } else {
            let got: Vec<Vec<u32>> = values::<f32>(&list).iter().map(|v| bits(v)).collect();
            let want: Vec<Vec<u32>> = params_f32.iter().map(|v| bits(v)).collect();
            assert_eq!(got, want, "{label}: step {step} vars");
        }
        let (m, v) = opt.moments_to_host().unwrap();
        assert_eq!(bits(&m), bits(engine.moments().0), "{label}: m");
        assert_eq!(bits(&v), bits(engine.moments().1), "{label}: v");
    }
    assert_eq!(opt.step_count().unwrap(), 3);
}

fn configs() -> Vec<Config> {
    let adamw = AdamWConfig {
        weight_decay: 0.01,
        ..AdamWConfig::default()
    };
    let mask = |mask_ratio, scope, masked| MaskConfig {
        mask_ratio,
        scope,
        masked,
    };
    vec![
        Config::new(adamw, mask(0.5, Scope::PerTensor, MaskedUpdate::ZeroGrad)),
        Config::new(
            AdamWConfig {
                max_grad_norm: Some(0.05),
                ..adamw
            },
            mask(0.3, Scope::Groups, MaskedUpdate::Freeze),
        ),
        Config::new(
            AdamWConfig {
                grad_scale: Some(4.0),
                ..adamw
            },
            mask(0.9, Scope::Global, MaskedUpdate::ZeroGrad),
        )
        .with_dense(|n| n.ends_with("layernorm.weight"))
        .with_frozen(|n| n.contains("o_proj")),
        Config::new(adamw, mask(0.5, Scope::PerTensor, MaskedUpdate::ZeroGrad))
            .with_mask_mode(MaskMode::Random { seed: 7 }),
        Config::new(adamw, MaskConfig::default()).with_lr(3e-2),
    ]
}

#[test]
fn f32_steps_equal_the_engine_bit_for_bit() {
    for config in configs() {
        compare(config, DType::F32, None);
    }
}

#[test]
fn bf16_steps_equal_the_engine_with_master_weights() {
    for config in configs() {
        compare(config, DType::BF16, None);
    }
}

/// PyTorch's rule: a var without a gradient is left untouched (value, m, v), as if frozen.
#[test]
fn a_var_without_a_gradient_is_left_untouched() {
    for config in configs().into_iter().take(3) {
        compare(config, DType::F32, Some(1));
    }
    let list = vars(DType::F32);
    let before = values::<f32>(&list);
    let mask = MaskConfig {
        mask_ratio: 0.5,
        ..MaskConfig::default()
    };
    let mut opt = GmtAdamW::new(list.clone(), AdamWConfig::default(), mask).unwrap();
    opt.step(&grads(&list, 1, Some(0)).0).unwrap();
    let after = values::<f32>(&list);
    assert_eq!(bits(&after[0]), bits(&before[0]));
    assert_ne!(bits(&after[1]), bits(&before[1]));
    let (m, _) = opt.moments_to_host().unwrap();
    assert!(m[..VARS[0].1].iter().all(|&x| x == 0.0));
}

/// A var's own storage given as a gradient (here an empty var, which the address check cannot
/// see): a typed error naming it, not a lock that waits for itself.
#[test]
fn a_var_as_its_own_gradient_is_rejected() {
    let list = vars(DType::F32);
    let before = values::<f32>(&list);
    let mut opt =
        GmtAdamW::new(list.clone(), AdamWConfig::default(), MaskConfig::default()).unwrap();
    for own in [4, 1] {
        let (mut store, _) = grads(&list, 1, None);
        let var = &list[own].1;
        store.insert(var.as_tensor(), var.as_tensor().clone());
        match opt.step(&store) {
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains(VARS[own].0) && e.contains("storage"), "{e}");
            }
            Ok(()) => panic!("var {own} as its own gradient was accepted"),
        }
    }
    assert_eq!(values::<f32>(&list), before);
    assert_eq!(opt.step_count().unwrap(), 0);
}

//! `gradmask::candle` in use: a tiny candle-nn model trains, accumulation masks the summed
//! gradient, a resumed run is bit-identical, and bad input is rejected by name, changing nothing.
#![cfg(feature = "candle")]

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Optimizer, VarMap};
use gradmask::candle::GmtAdamW;
use gradmask::{AdamWConfig, CpuSelector, Error, MaskConfig, Scope, TensorTable, VarProblem};

const MASK: MaskConfig = MaskConfig {
    mask_ratio: 0.5,
    scope: Scope::PerTensor,
    masked: gradmask::MaskedUpdate::ZeroGrad,
};

/// A seeded 2-layer MLP regression: y = sum of the inputs' squares.
struct Mlp {
    varmap: VarMap,
    fc1: candle_nn::Linear,
    fc2: candle_nn::Linear,
}

/// Seeded weights (candle's CPU device has no seedable rng), in a VarMap under Llama-style names.
fn mlp(seed: u64) -> Mlp {
    let varmap = VarMap::new();
    let layer = |name: &str, rows: usize, cols: usize| {
        let mut data = varmap.data().lock().unwrap();
        let mut tensors = Vec::new();
        for (part, shape) in [("weight", vec![rows, cols]), ("bias", vec![rows])] {
            let n: usize = shape.iter().product();
            let scale = 1.0 / (cols as f32).sqrt();
            let x: Vec<f32> = (0..n as u64)
                .map(|i| {
                    ((gradmask::rng::mix(seed, n as u64, i) >> 8) as f32 / (1u32 << 24) as f32
                        - 0.5)
                        * 2.0
                        * scale
                })
                .collect();
            let var = Var::from_tensor(&Tensor::from_vec(x, shape, &Device::Cpu).unwrap()).unwrap();
            tensors.push(var.as_tensor().clone());
            data.insert(format!("{name}.{part}"), var);
        }
        candle_nn::Linear::new(tensors[0].clone(), Some(tensors[1].clone()))
    };
    let fc1 = layer("layers.0.fc", 33, 8);
    let fc2 = layer("layers.1.fc", 1, 33);
    Mlp { varmap, fc1, fc2 }
}

fn batch(step: u64) -> (Tensor, Tensor) {
    let x: Vec<f32> = (0..64 * 8)
        .map(|i| (((i as u64 * 2654435761 + step * 97) % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let x = Tensor::from_vec(x, (64, 8), &Device::Cpu).unwrap();
    let y = x.sqr().unwrap().sum_keepdim(1).unwrap();
    (x, y)
}

fn loss(m: &Mlp, step: u64) -> Tensor {
    let (x, y) = batch(step);
    let h = m.fc1.forward(&x).unwrap().relu().unwrap();
    let out = m.fc2.forward(&h).unwrap();
    candle_nn::loss::mse(&out, &y).unwrap()
}

fn snapshot(varmap: &VarMap) -> Vec<(String, Vec<u32>)> {
    let mut all: Vec<(String, Vec<u32>)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(n, v)| {
            let x = v.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (n.clone(), x.iter().map(|f| f.to_bits()).collect())
        })
        .collect();
    all.sort();
    all
}

#[test]
fn a_tiny_mlp_learns() {
    let m = mlp(1);
    let mut opt = GmtAdamW::new(&m.varmap, AdamWConfig::default(), MASK).unwrap();
    opt.set_learning_rate(1e-2);
    let first = loss(&m, 0).to_scalar::<f32>().unwrap();
    for step in 0..150 {
        opt.backward_step(&loss(&m, step)).unwrap();
    }
    let last = loss(&m, 0).to_scalar::<f32>().unwrap();
    assert!(last < first * 0.2, "loss {first} -> {last}");
    let report = opt.last_report().unwrap();
    let group = opt.group_of("layers.0.fc.weight").unwrap();
    assert_eq!(report.groups[group].target, 8 * 33 / 2);
}

#[test]
fn resume_is_bit_exact() {
    let dir = std::env::temp_dir().join(format!("gradmask-candle-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |m: &Mlp, opt: &mut GmtAdamW, steps: std::ops::Range<u64>| {
        for step in steps {
            opt.set_learning_rate(1e-2 / (1 + step) as f64);
            opt.backward_step(&loss(m, step)).unwrap();
        }
    };
    let straight = mlp(2);
    let mut opt = GmtAdamW::new(&straight.varmap, AdamWConfig::default(), MASK).unwrap();
    run(&straight, &mut opt, 0..6);

    let first = mlp(2);
    let mut opt = GmtAdamW::new(&first.varmap, AdamWConfig::default(), MASK).unwrap();
    run(&first, &mut opt, 0..3);
    first.varmap.save(dir.join("vars.safetensors")).unwrap();
    opt.save(&dir.join("opt.safetensors")).unwrap();

    let mut resumed = mlp(99); // other initial weights, replaced by the load
    resumed.varmap.load(dir.join("vars.safetensors")).unwrap();
    let mut opt = GmtAdamW::new(&resumed.varmap, AdamWConfig::default(), MASK).unwrap();
    opt.load(&dir.join("opt.safetensors")).unwrap();
    assert_eq!(opt.step_count().unwrap(), 3);
    run(&resumed, &mut opt, 3..6);
    assert_eq!(snapshot(&resumed.varmap), snapshot(&straight.varmap));
    resumed.fc1 = first.fc1; // silence unused-field lints on the moved model
    let _ = std::fs::remove_dir_all(&dir);
}

/// GMT masks the gradient summed over the micro-batches. Masking each micro-batch and summing
/// keeps other entries: the two give different weights.
#[test]
fn accumulation_masks_the_sum_not_each_micro_batch() {
    let len = 1001;
    let var = || Var::from_tensor(&Tensor::zeros(len, DType::F32, &Device::Cpu).unwrap()).unwrap();
    let micro: Vec<Vec<f32>> = (0..3u64)
        .map(|s| {
            (0..len)
                .map(|i| ((i as u64 * 7919 + s * 104729) % 2003) as f32 / 1000.0 - 1.0)
                .collect()
        })
        .collect();
    let store = |v: &Var, g: &[f32]| {
        let mut s = GradStore::default();
        s.insert(
            v.as_tensor(),
            Tensor::from_slice(g, len, &Device::Cpu).unwrap(),
        );
        s
    };
    let accumulated = var();
    let mut opt = GmtAdamW::new(
        vec![("w".to_string(), accumulated.clone())],
        AdamWConfig::default(),
        MASK,
    )
    .unwrap();
    // Nothing accumulated: rejected, no step counted.
    assert!(matches!(
        opt.step_accumulated(),
        Err(Error::InvalidConfig { .. })
    ));
    assert_eq!(opt.step_count().unwrap(), 0);
    for g in &micro {
        opt.accumulate(&store(&accumulated, g)).unwrap();
    }
    assert_eq!(opt.micro_batches(), 3);
    opt.step_accumulated().unwrap();
    assert_eq!((opt.micro_batches(), opt.step_count().unwrap()), (0, 1));

    // The engine on the sum (added in the same order, in f32) gives the same bits.
    let sum: Vec<f32> = (0..len)
        .map(|i| micro.iter().fold(0.0f32, |acc, g| acc + g[i]))
        .collect();
    let table = TensorTable::per_tensor(&[len]).unwrap();
    let mut engine = gradmask::GmtAdamW::new(table.clone(), AdamWConfig::default(), MASK).unwrap();
    let mut p = vec![0.0f32; len];
    engine.step(&mut [&mut p[..]], &[&sum[..]], 1e-3).unwrap();
    let got = accumulated.as_tensor().to_vec1::<f32>().unwrap();
    assert_eq!(
        got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        p.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );

    // Masking each micro-batch, then stepping on the sum of the masked gradients.
    let mut selector = CpuSelector::new(&table, Scope::PerTensor);
    let mut masked_sum = vec![0.0f32; len];
    for g in &micro {
        let stats = selector.select(&[&g[..]], 0.5).unwrap().groups[0];
        for (acc, x) in masked_sum.iter_mut().zip(g) {
            *acc += if stats.keeps_key(x.to_bits() & 0x7fff_ffff) {
                *x
            } else {
                0.0
            };
        }
    }
    let per_micro = var();
    let mut sft = GmtAdamW::new(
        vec![("w".to_string(), per_micro.clone())],
        AdamWConfig::default(),
        MaskConfig::default(),
    )
    .unwrap();
    sft.step(&store(&per_micro, &masked_sum)).unwrap();
    let other = per_micro.as_tensor().to_vec1::<f32>().unwrap();
    let differ = got.iter().zip(&other).filter(|(a, b)| a != b).count();
    assert!(differ > len / 10, "only {differ} entries differ");
}

fn var_error(e: Error) -> (String, VarProblem) {
    match e {
        Error::Var { var, problem } => (var, problem),
        other => panic!("expected Error::Var, got {other:?}"),
    }
}

#[test]
fn bad_input_names_the_var_and_changes_nothing() {
    let m = mlp(3);
    let named = |name: &str, dtype: DType| {
        let t = Tensor::ones(4, dtype, &Device::Cpu).unwrap();
        (name.to_string(), Var::from_tensor(&t).unwrap())
    };
    // An unsupported dtype, and two dtypes in one optimizer.
    let e = GmtAdamW::new(
        vec![named("a", DType::F32), named("half", DType::F16)],
        AdamWConfig::default(),
        MASK,
    );
    assert!(matches!(var_error(e.err().unwrap()), (v, VarProblem::DType { .. }) if v == "half"));
    let e = GmtAdamW::new(
        vec![named("a", DType::F32), named("b", DType::BF16)],
        AdamWConfig::default(),
        MASK,
    );
    assert!(matches!(var_error(e.err().unwrap()), (v, VarProblem::DType { .. }) if v == "b"));
    // A var listed twice.
    let a = named("a", DType::F32);
    let e = GmtAdamW::new(
        vec![a.clone(), ("again".to_string(), a.1.clone())],
        AdamWConfig::default(),
        MASK,
    );
    assert!(matches!(var_error(e.err().unwrap()), (v, VarProblem::Shared { .. }) if v == "again"));

    // A gradient of another shape or dtype: rejected, nothing stepped or accumulated.
    let mut opt = GmtAdamW::new(&m.varmap, AdamWConfig::default(), MASK).unwrap();
    let before = snapshot(&m.varmap);
    let weight = opt.vars()[opt
        .names()
        .iter()
        .position(|n| n == "layers.1.fc.weight")
        .unwrap()]
    .clone();
    for bad in [
        Tensor::zeros((1, 34), DType::F32, &Device::Cpu),
        Tensor::zeros((1, 33), DType::F64, &Device::Cpu),
    ] {
        let mut store = loss(&m, 0).backward().unwrap();
        store.insert(weight.as_tensor(), bad.unwrap());
        let (var, problem) = var_error(opt.accumulate(&store).err().unwrap());
        assert!(var == "layers.1.fc.weight" && matches!(problem, VarProblem::Gradient { .. }));
        assert!(opt.step(&store).is_err());
    }
    assert_eq!(opt.micro_batches(), 0);
    assert_eq!(opt.step_count().unwrap(), 0);
    assert_eq!(snapshot(&m.varmap), before);

    // A checkpoint of other vars; a checkpoint of unnamed vars.
    let dir = std::env::temp_dir().join(format!("gradmask-candle-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("opt.safetensors");
    let other = mlp(4);
    let renamed: Vec<(String, Var)> = {
        // The same shapes under other names:
        let data = other.varmap.data().lock().unwrap();
        let mut list: Vec<_> = data
            .iter()
            .map(|(n, v)| (n.replace("fc", "proj"), v.clone()))
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    };
    let mut theirs = GmtAdamW::new(renamed, AdamWConfig::default(), MASK).unwrap();
    theirs.backward_step(&loss(&other, 0)).unwrap();
    theirs.save(&path).unwrap();
    opt.backward_step(&loss(&m, 0)).unwrap();
    let moments = opt.moments_to_host().unwrap();
    let (var, problem) = var_error(opt.load(&path).err().unwrap());
    assert_eq!(var, "layers.0.fc.bias");
    assert!(
        matches!(problem, VarProblem::Checkpoint { found, .. } if found == "layers.0.proj.bias")
    );
    assert_eq!(opt.moments_to_host().unwrap(), moments);
    assert_eq!(opt.step_count().unwrap(), 1);
    let mut unnamed = GmtAdamW::new(m.varmap.all_vars(), AdamWConfig::default(), MASK).unwrap();
    assert!(matches!(
        unnamed.save(&path),
        Err(Error::InvalidConfig { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

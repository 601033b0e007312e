//! `gradmask::candle` on candle's CUDA backend against the same adapter on the CPU: the same vars
//! and gradients give the same vars, moments, master weights, kept counts and thresholds, bit for
//! bit (f32 and bf16 vars; accumulation; a var without a gradient; a checkpoint moved between the
//! devices). Needs a CUDA GPU with cuBLAS and a build with `--features cuda`, or the stand-in
//! driver (`scripts/vgpu-candle.sh`, which builds and runs this file); elsewhere each test says so
//! and passes.
#![cfg(feature = "candle")]

const NEEDS: &str = "needs a CUDA GPU with cuBLAS (candle's CUDA backend) and a build with \
                     `--features cuda` (scripts/build-cuda-example.sh test --no-run)";

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_adapter_matches_the_cpu_adapter() {
    eprintln!("skipped: {NEEDS}");
}

#[cfg(feature = "cuda")]
mod on_gpu {
    use candle_core::backprop::GradStore;
    use candle_core::{DType, Device, Tensor, Var};
    use candle_nn::Optimizer;
    use gradmask::candle::{Config, GmtAdamW};
    use gradmask::{AdamWConfig, MaskConfig, MaskMode, MaskedUpdate, Scope};

    const LENGTHS: [usize; 5] = [70_001, 257, 3, 1, 0];

    fn gpu() -> Option<Device> {
        match Device::new_cuda(0) {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("skipped: {} ({e})", super::NEEDS);
                None
            }
        }
    }

    fn tensor(len: usize, seed: u64, scale: f32, dtype: DType, dev: &Device) -> Tensor {
        let data: Vec<f32> = (0..len as u64)
            .map(|i| {
                ((gradmask::rng::mix(seed, 0, i) >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * scale
            })
            .collect();
        // Cast on the CPU, then moved: candle's CUDA cast of an empty tensor launches a grid of 0
        // blocks, which CUDA refuses (found on the stand-in driver).
        Tensor::from_vec(data, len, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
            .to_device(dev)
            .unwrap()
    }

    fn vars(dtype: DType, dev: &Device) -> Vec<(String, Var)> {
        LENGTHS
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                (
                    format!("model.layers.{}.w{i}", i / 2),
                    Var::from_tensor(&tensor(n, i as u64, 1.0, dtype, dev)).unwrap(),
                )
            })
            .collect()
    }

    fn store(vars: &[(String, Var)], step: u64, missing: Option<usize>) -> GradStore {
        let mut s = GradStore::default();
        for (i, (_, v)) in vars.iter().enumerate().filter(|(i, _)| Some(*i) != missing) {
            s.insert(
                v.as_tensor(),
                tensor(
                    v.elem_count(),
                    100 * step + i as u64,
                    0.02,
                    v.dtype(),
                    v.device(),
                ),
            );
        }
        s
    }

    fn bits(vars: &[(String, Var)]) -> Vec<Vec<u32>> {
        vars.iter()
            .map(|(_, v)| {
                v.as_tensor()
                    .to_device(&Device::Cpu)
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect()
            })
            .collect()
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
            Config::new(adamw, mask(0.3, Scope::Groups, MaskedUpdate::Freeze))
                .with_frozen(|n| n.ends_with("w3")),
            Config::new(
                AdamWConfig {
                    grad_scale: Some(2.0),
                    ..adamw
                },
                mask(0.9, Scope::Global, MaskedUpdate::ZeroGrad),
            ),
            Config::new(adamw, mask(0.5, Scope::PerTensor, MaskedUpdate::ZeroGrad))
                .with_mask_mode(MaskMode::Random { seed: 3 }),
        ]
    }

    fn compare(dtype: DType, missing: Option<usize>, accumulate: bool) {
        let Some(dev) = gpu() else { return };
        for config in configs() {
            let (cpu_vars, gpu_vars) = (vars(dtype, &Device::Cpu), vars(dtype, &dev));
            let mut cpu = GmtAdamW::with_config(cpu_vars.clone(), config.clone()).unwrap();
            let mut gpu = GmtAdamW::with_config(gpu_vars.clone(), config.clone()).unwrap();
            for step in 1..=3 {
                if accumulate {
                    for micro in 0..2 {
                        cpu.accumulate(&store(&cpu_vars, 10 * step + micro, missing))
                            .unwrap();
                        gpu.accumulate(&store(&gpu_vars, 10 * step + micro, missing))
                            .unwrap();
                    }
                    cpu.step_accumulated().unwrap();
                    gpu.step_accumulated().unwrap();
                } else {
                    cpu.step(&store(&cpu_vars, step, missing)).unwrap();
                    gpu.step(&store(&gpu_vars, step, missing)).unwrap();
                }
                let label = format!(
                    "{config:?} {dtype:?} missing {missing:?} accumulate {accumulate} step {step}"
                );
                assert_eq!(bits(&gpu_vars), bits(&cpu_vars), "{label}: vars");
                assert_eq!(
                    gpu.moments_to_host().unwrap(),
                    cpu.moments_to_host().unwrap(),
                    "{label}: moments"
                );
                assert_eq!(
                    gpu.master_to_host().unwrap(),
                    cpu.master_to_host().unwrap(),
                    "{label}: master"
                );
                let (g, c) = (gpu.last_report().unwrap(), cpu.last_report().unwrap());
                let groups = |r: &gradmask::StepReport| {
                    r.groups
                        .iter()
                        .map(|g| (g.len, g.target, g.kept, g.threshold_key))
                        .collect::<Vec<_>>()
                };
                assert_eq!(groups(&g), groups(&c), "{label}: report");
            }
        }
    }

    #[test]
    fn f32_vars_match_the_cpu() {
        compare(DType::F32, None, false);
    }

    #[test]
    fn bf16_vars_match_the_cpu() {
        compare(DType::BF16, None, false);
    }

    #[test]
    fn accumulation_and_missing_gradients_match_the_cpu() {
        compare(DType::F32, Some(1), true);
    }

    #[test]
    fn a_checkpoint_moves_between_the_devices() {
        let Some(dev) = gpu() else { return };
        let dir = std::env::temp_dir().join(format!("gradmask-candle-cuda-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mask = MaskConfig {
            mask_ratio: 0.5,
            ..MaskConfig::default()
        };
        let gpu_vars = vars(DType::F32, &dev);
        let mut gpu = GmtAdamW::new(gpu_vars.clone(), AdamWConfig::default(), mask).unwrap();
        gpu.step(&store(&gpu_vars, 1, None)).unwrap();
        gpu.save(&dir.join("opt.safetensors")).unwrap();
        let cpu_vars: Vec<(String, Var)> = gpu_vars
            .iter()
            .map(|(n, v)| {
                (
                    n.clone(),
                    Var::from_tensor(&v.as_tensor().to_device(&Device::Cpu).unwrap()).unwrap(),
                )
            })
            .collect();
        let mut cpu = GmtAdamW::new(cpu_vars.clone(), AdamWConfig::default(), mask).unwrap();
        cpu.load(&dir.join("opt.safetensors")).unwrap();
        gpu.step(&store(&gpu_vars, 2, None)).unwrap();
        cpu.step(&store(&cpu_vars, 2, None)).unwrap();
        assert_eq!(bits(&gpu_vars), bits(&cpu_vars));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

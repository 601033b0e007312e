//! Training runs, gradients and generation.

use candle_core::{Device, Tensor};

use super::{
    assert_learns_and_masks_half, micro_args, scratch, threads, train_lines, train_losses,
};
use crate::cli::Size;
use crate::model::{Llama, LlamaConfig};
use crate::{builtin_config, hf, run};

#[test]
fn micro_run_learns_masks_the_ratio_and_resumes_exactly() {
    let full = scratch("full");
    let results = run(&micro_args(&full, &[]), threads()).unwrap();
    assert_eq!(results.len(), 1);
    let losses = assert_learns_and_masks_half(&full);
    for name in ["metrics.jsonl", "summary.json", "loss.png"] {
        assert!(full.join(name).exists(), "{name}");
    }
    // Per-tensor scope: each layer keeps 1 - r by construction, so no kept-fraction plot.
    assert!(!full.join("kept_fraction.png").exists());

    // Killed after step 15, resumed from the step-10 checkpoint.
    let split = scratch("split");
    assert!(run(&micro_args(&split, &["--stop-after", "15"]), threads())
        .unwrap()
        .is_empty());
    assert_eq!(train_lines(&split, "gmt").len(), 15);
    let err = run(&micro_args(&split, &[]), threads()).unwrap_err();
    assert!(format!("{err:#}").contains("already exists"), "{err:#}");
    run(&micro_args(&split, &["--resume"]), threads()).unwrap();
    let resumed: Vec<f64> = train_losses(&split, "gmt");
    assert_eq!(
        resumed, losses,
        "a resumed run must reproduce the uninterrupted loss curve"
    );
    std::fs::remove_dir_all(full).unwrap();
    std::fs::remove_dir_all(split).unwrap();
}

#[test]
fn gradients_are_real_in_every_parameter() {
    let cfg = LlamaConfig {
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        ..builtin_config(Size::Micro, 99)
    };
    let model = Llama::init(cfg, 1, &Device::Cpu).unwrap();
    let batch = crate::data::make_batch(
        &[
            &crate::data::Tokenized {
                ids: vec![3, 9, 4, 7, 12, 2],
                n_prompt: 2,
            },
            &crate::data::Tokenized {
                ids: vec![5, 6, 7, 8, 2],
                n_prompt: 3,
            },
        ],
        0,
        &Device::Cpu,
    )
    .unwrap();
    let loss = |m: &Llama| crate::eval::mean_nll(m, &batch).unwrap();
    let grads = loss(&model).backward().unwrap();
    for param in &model.params {
        let g = grads
            .get(param.var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {}", param.name));
        let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Central difference at the entry with the largest gradient.
        let (at, &analytic) = g
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .unwrap();
        assert!(analytic.abs() > 0.0, "{}: zero gradient", param.name);
        let mut w = param.var.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let h = 1e-2f32;
        let mut at_offset = |delta: f32| {
            w[at] += delta;
            param
                .var
                .set(&Tensor::from_slice(&w, param.var.shape(), &Device::Cpu).unwrap())
                .unwrap();
            loss(&model).to_scalar::<f32>().unwrap() as f64
        };
        let (up, down) = (at_offset(h), at_offset(-2.0 * h));
        at_offset(h);
        let numeric = (up - down) / (2.0 * h as f64);
        let tol = 0.05 * analytic.abs() as f64 + 1e-3;
        assert!(
            (numeric - analytic as f64).abs() < tol,
            "{}: numeric {numeric}, backward {analytic}",
            param.name
        );
    }
}

#[test]
fn cached_left_padded_generation_matches_naive_greedy() {
    let model = Llama::init(builtin_config(Size::Micro, 99), 9, &Device::Cpu).unwrap();
    let prompts = vec![
        vec![5u32, 17, 30, 41, 8, 9, 60],
        vec![7, 7, 12],
        vec![90, 3, 4, 5, 6],
    ];
    let batched = crate::eval::generate(&model, &prompts, 6, 2).unwrap();
    for (prompt, got) in prompts.iter().zip(&batched) {
        // Naive: one sequence, no cache, the whole prefix recomputed for every token.
        let mut ids = prompt.clone();
        let mut want = Vec::new();
        for _ in 0..6 {
            let input = Tensor::new(ids.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let hidden = model.hidden(&input, 0, None, None).unwrap();
            let last = hidden.narrow(0, ids.len() - 1, 1).unwrap();
            let next = model
                .logits(&last)
                .unwrap()
                .argmax(1)
                .unwrap()
                .to_vec1::<u32>()
                .unwrap()[0];
            want.push(next);
            ids.push(next);
            if next == 2 {
                break;
            }
        }
        assert_eq!(got, &want, "prompt {prompt:?}");
    }
}

#[test]
fn compare_runs_every_baseline_and_hft_leaves_frozen_matrices_alone() {
    let out = scratch("compare");
    let args = micro_args(
        &out,
        &[
            "--compare",
            "sft,random,hft,oneoff",
            "--steps",
            "6",
            "--save-every",
            "6",
        ],
    );
    let results = run(&args, threads()).unwrap();
    let names: Vec<&str> = results.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(names, ["sft", "random", "hft", "oneoff"]);
    let (sft, oneoff) = (&results[0], &results[3]);
    assert_eq!(
        sft.final_train_loss, oneoff.final_train_loss,
        "one-off reuses the SFT run"
    );
    // HFT: the frozen matrices still hold their initial values, the others moved.
    let ckpt = out.join("hft/checkpoints/step-000006");
    let (cfg, _) = hf::read_config(&ckpt.join("config.json")).unwrap();
    let init = Llama::init(cfg, args.seed, &Device::Cpu).unwrap();
    let frozen = crate::methods::hft_frozen(&init, args.seed);
    assert_eq!(
        frozen.iter().filter(|&&f| f).count(),
        2 * 2 + 2 + 1,
        "2 layers: 2 attention + 2 or 1 MLP each"
    );
    let (trained, _) = hf::load_dir(&ckpt, &Device::Cpu).unwrap();
    for ((a, b), frozen) in init.params.iter().zip(&trained.params).zip(frozen) {
        let same = a.var.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            == b.var.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(same, frozen, "{}", a.name);
    }
    std::fs::remove_dir_all(out).unwrap();
}

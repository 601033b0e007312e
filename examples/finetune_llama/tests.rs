//! End-to-end tests of the example trainer on the micro model (seconds each):
//! - a 30-step GMT run: the loss falls, kept counts match the mask ratio, and a run killed after
//!   15 steps and resumed from its step-10 checkpoint reproduces the uninterrupted loss curve;
//! - HF directories: round trip, and the error for each kind of bad input;
//! - GGUF: a small Q4_1 file written here loads back (dequantized, Q/K unpermuted, tokenizer rebuilt).

use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use clap::Parser;

use crate::cli::Args;
use crate::model::{param_specs, Llama, LlamaConfig, Role};
use crate::{builtin_config, cli::Size, cpu, gguf, hf, metrics, run, train};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("finetune-llama-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn micro_args(out: &Path, extra: &[&str]) -> Args {
    let mut argv: Vec<String> = "finetune_llama --size micro --method gmt --mask-ratio 0.5 --steps 30 --micro-batch 8 \
         --lr 1e-2 --examples 300 --heldout 16 --eval-every 0 --eval-samples 4 --max-new-tokens 6 --save-every 10 --quiet --out"
        .split_whitespace()
        .map(String::from)
        .collect();
    argv.push(out.display().to_string());
    argv.extend(extra.iter().map(|s| s.to_string()));
    Args::parse_from(argv)
}

fn threads() -> cpu::Threads {
    cpu::Threads {
        threads: 2,
        ftz: false,
    }
}

fn train_lines(out: &Path, method: &str) -> Vec<serde_json::Value> {
    let lines = metrics::read_lines(&out.join(method).join("metrics.jsonl")).unwrap();
    lines.into_iter().filter(|v| v["kind"] == "train").collect()
}

#[test]
fn micro_run_learns_masks_the_ratio_and_resumes_exactly() {
    let full = scratch("full");
    let results = run(&micro_args(&full, &[]), threads()).unwrap();
    assert_eq!(results.len(), 1);
    let lines = train_lines(&full, "gmt");
    assert_eq!(lines.len(), 30);
    let losses: Vec<f64> = lines.iter().map(|v| v["loss"].as_f64().unwrap()).collect();
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    assert!(
        mean(&losses[25..]) < 0.8 * mean(&losses[..5]),
        "loss did not fall: {losses:?}"
    );
    let ckpt = full.join("gmt/checkpoints/step-000030");
    let (cfg, _) = hf::read_config(&ckpt.join("config.json")).unwrap();
    let sizes: Vec<u64> = param_specs(&cfg)
        .iter()
        .map(|(_, shape, _, _)| shape.iter().product::<usize>() as u64)
        .collect();
    for line in &lines {
        // Per tensor: target = len - floor(0.5 len); ties at the threshold may only add a few.
        let (kept, target, len) = (
            line["kept"].as_u64().unwrap(),
            line["target"].as_u64().unwrap(),
            line["len"].as_u64().unwrap(),
        );
        assert_eq!(len, sizes.iter().sum::<u64>());
        assert_eq!(target, sizes.iter().map(|n| n - n / 2).sum::<u64>());
        assert!(
            kept >= target && (kept - target) as f64 <= 0.01 * len as f64,
            "kept {kept}, target {target}"
        );
    }
    for name in [
        "metrics.jsonl",
        "summary.json",
        "loss.png",
        "kept_fraction.png",
    ] {
        assert!(full.join(name).exists(), "{name}");
    }

    // Killed after step 15, resumed from the step-10 checkpoint.
    let split = scratch("split");
    assert!(run(&micro_args(&split, &["--stop-after", "15"]), threads())
        .unwrap()
        .is_empty());
    assert_eq!(train_lines(&split, "gmt").len(), 15);
    let err = run(&micro_args(&split, &[]), threads()).unwrap_err();
    assert!(format!("{err:#}").contains("already exists"), "{err:#}");
    run(&micro_args(&split, &["--resume"]), threads()).unwrap();
    let resumed: Vec<f64> = train_lines(&split, "gmt")
        .iter()
        .map(|v| v["loss"].as_f64().unwrap())
        .collect();
    assert_eq!(
        resumed, losses,
        "a resumed run must reproduce the uninterrupted loss curve"
    );
    std::fs::remove_dir_all(full).unwrap();
    std::fs::remove_dir_all(split).unwrap();
}

/// A gpt2-style tokenizer with the byte-level alphabet, two merges and one control token, as GGUF metadata.
fn tokenizer_metadata() -> Vec<(&'static str, gguf_file::Value)> {
    use gguf_file::Value;
    let mut alphabet: Vec<char> = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet()
        .into_iter()
        .collect();
    alphabet.sort();
    let mut tokens: Vec<String> = alphabet.iter().map(|c| c.to_string()).collect();
    tokens.extend(["he", "ll", "<|endoftext|>"].map(String::from));
    let types: Vec<Value> = (0..tokens.len())
        .map(|i| Value::I32(if i + 1 == tokens.len() { 3 } else { 1 }))
        .collect();
    let strings = |v: Vec<String>| Value::Array(v.into_iter().map(Value::String).collect());
    vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("smollm".into())),
        (
            "tokenizer.ggml.eos_token_id",
            Value::U32(tokens.len() as u32 - 1),
        ),
        (
            "tokenizer.ggml.merges",
            strings(vec!["h e".into(), "l l".into()]),
        ),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.tokens", strings(tokens)),
    ]
}

fn gguf_config() -> LlamaConfig {
    LlamaConfig {
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        ..builtin_config(Size::Micro, 259)
    }
}

/// Writes `model` as llama.cpp would: GGUF names, Q/K rows permuted, matrices in Q4_1.
fn write_gguf(path: &Path, model: &Llama) {
    use gguf_file::Value;
    let cfg = &model.cfg;
    let mut metadata = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.embedding_length", Value::U32(cfg.hidden_size as u32)),
        (
            "llama.feed_forward_length",
            Value::U32(cfg.intermediate_size as u32),
        ),
        (
            "llama.block_count",
            Value::U32(cfg.num_hidden_layers as u32),
        ),
        (
            "llama.attention.head_count",
            Value::U32(cfg.num_attention_heads as u32),
        ),
        (
            "llama.attention.head_count_kv",
            Value::U32(cfg.kv_heads() as u32),
        ),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.rope.freq_base", Value::F32(10_000.0)),
        ("llama.context_length", Value::U32(512)),
    ];
    metadata.extend(tokenizer_metadata());
    let mut tensors = Vec::new();
    for param in &model.params {
        let w = param.var.as_tensor().clone();
        let (w, dtype) = match param.role {
            Role::Q => (
                gguf::permute_rows(&w, cfg.num_attention_heads, false).unwrap(),
                GgmlDType::Q4_1,
            ),
            Role::K => (
                gguf::permute_rows(&w, cfg.kv_heads(), false).unwrap(),
                GgmlDType::Q4_1,
            ),
            _ if w.rank() == 2 => (w, GgmlDType::Q4_1),
            _ => (w, GgmlDType::F32),
        };
        tensors.push((
            gguf::gguf_name(&param.name),
            QTensor::quantize(&w, dtype).unwrap(),
        ));
    }
    let meta_refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut file, &meta_refs, &tensor_refs).unwrap();
}

#[test]
fn gguf_round_trip_dequantizes_unpermutes_and_rebuilds_the_tokenizer() {
    let dir = scratch("gguf");
    let original = Llama::init(gguf_config(), 3, &Device::Cpu).unwrap();
    let path = dir.join("tiny.Q4_1.gguf");
    write_gguf(&path, &original);
    let (loaded, tok) = gguf::load(&path, &Device::Cpu).unwrap();
    assert_eq!(
        loaded.cfg,
        LlamaConfig {
            max_position_embeddings: 512,
            ..gguf_config()
        }
    );
    for (a, b) in original.params.iter().zip(&loaded.params) {
        let diff = (a.var.as_tensor() - b.var.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        // Q4_1 steps are range/15 per block of 32; N(0, 0.02) weights span about 0.12.
        assert!(
            diff.to_scalar::<f32>().unwrap() < 0.006,
            "{}: {diff}",
            a.name
        );
    }
    let ids = tok.encode("hello 123").unwrap();
    assert_eq!(ids.len(), 7, "he ll o Ġ 1 2 3: {ids:?}");
    assert_eq!(tok.decode(&ids).unwrap(), "hello 123");
    assert_eq!(tok.encode("<|endoftext|>").unwrap(), vec![258]);
    assert_eq!(tok.eos(), 258);
    assert!(crate::eval::perplexity(&loaded, &tok, "hello hello")
        .unwrap()
        .is_finite());

    // Bad files name themselves.
    std::fs::write(dir.join("bad.gguf"), b"GGUF\x03\0\0\0garbage").unwrap();
    let err = gguf::load(&dir.join("bad.gguf"), &Device::Cpu)
        .err()
        .expect("an error");
    assert!(
        format!("{err:#}").contains("bad.gguf: not a valid GGUF file"),
        "{err:#}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn hf_directories_round_trip_and_bad_input_is_named() {
    let dir = scratch("hf");
    let model = Llama::init(gguf_config(), 5, &Device::Cpu).unwrap();
    let host = train::host_params(&model).unwrap();
    let err_of = |dir: &Path| {
        format!(
            "{:#}",
            hf::load_dir(dir, &Device::Cpu).err().expect("an error")
        )
    };

    // A saved directory (the GGUF test's tokenizer) loads back bit for bit.
    let gguf_path = dir.join("t.gguf");
    write_gguf(&gguf_path, &model);
    let content = gguf_file::Content::read(&mut std::fs::File::open(&gguf_path).unwrap()).unwrap();
    let tok = gguf::tokenizer(&content, &gguf_path).unwrap();
    hf::save_dir(&dir, &model.cfg, &host, &tok).unwrap();
    let (loaded, loaded_tok) = hf::load_dir(&dir, &Device::Cpu).unwrap();
    assert_eq!(train::host_params(&loaded).unwrap(), host);
    assert_eq!(loaded_tok.eos(), 258);
    assert_eq!(
        loaded_tok.encode("hello").unwrap(),
        tok.encode("hello").unwrap()
    );

    // No tokenizer.json.
    std::fs::rename(dir.join("tokenizer.json"), dir.join("moved.json")).unwrap();
    let missing = format!(
        "missing tokenizer: {}",
        dir.join("tokenizer.json").display()
    );
    assert!(err_of(&dir).contains(&missing), "{}", err_of(&dir));
    std::fs::rename(dir.join("moved.json"), dir.join("tokenizer.json")).unwrap();

    // config/weights mismatch: one layer more than the weights have.
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        config.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3"),
    )
    .unwrap();
    assert!(
        err_of(&dir)
            .contains("config/weights mismatch: tensor `model.layers.2.input_layernorm.weight`"),
        "{}",
        err_of(&dir)
    );
    std::fs::write(dir.join("config.json"), &config).unwrap();

    // Corrupt weights, missing weights, missing directory.
    std::fs::write(dir.join("model.safetensors"), b"not safetensors").unwrap();
    assert!(
        err_of(&dir).contains("model.safetensors: corrupt or unreadable safetensors file"),
        "{}",
        err_of(&dir)
    );
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    assert!(err_of(&dir).contains("missing model file: no *.safetensors"));
    assert!(err_of(&dir.join("nope")).contains("nope does not exist"));
    std::fs::remove_dir_all(dir).unwrap();
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

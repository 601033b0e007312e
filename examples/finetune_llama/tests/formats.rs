//! Model files: GGUF written by the test, Hugging Face directories, and bad input.

use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Device;

use super::scratch;
use crate::builtin_config;
use crate::cli::Size;
use crate::model::{gguf, hf};
use crate::model::{Llama, LlamaConfig, Role};

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
    assert!(crate::train::eval::perplexity(&loaded, &tok, "hello hello")
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
    let host = crate::model::host_params(&model).unwrap();
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
    assert_eq!(crate::model::host_params(&loaded).unwrap(), host);
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

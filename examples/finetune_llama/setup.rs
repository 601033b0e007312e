//! Setting up a run from the options: the device, the data, the model and its tokenizer, the
//! output folder and the loop settings.

use std::path::{Path, PathBuf};

#[cfg(feature = "cuda")]
use anyhow::Context;
use anyhow::{bail, Result};
use candle_core::Device;

use crate::cli::{Args, Size};
use crate::data::{self, split, tokenize, Example, Fields};
use crate::model::{Llama, LlamaConfig};
use crate::tokenizer::Tok;
use crate::train::{DataSet, TrainConfig};
use crate::{gguf, hf, problems, report};

/// The built-in model: a Llama with grouped-query attention and a tied head.
pub fn builtin_config(size: Size, vocab_size: usize) -> LlamaConfig {
    let (hidden, inter, layers, heads, kv) = match size {
        Size::Small => (128, 344, 4, 4, 2),
        Size::Micro => (32, 64, 2, 2, 1),
    };
    LlamaConfig {
        vocab_size,
        hidden_size: hidden,
        intermediate_size: inter,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: Some(kv),
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        tie_word_embeddings: true,
        max_position_embeddings: 512,
        model_type: "llama".into(),
    }
}

pub fn device(args: &Args) -> Result<Device> {
    if !args.cuda {
        return Ok(Device::Cpu);
    }
    #[cfg(feature = "cuda")]
    return Device::new_cuda(0).context("--cuda: opening CUDA device 0");
    #[cfg(not(feature = "cuda"))]
    bail!("--cuda needs a build with `--features cuda` (see README.md, \"Example trainer\")")
}

/// The model and its tokenizer; the built-in tokenizer's vocabulary comes from `examples`.
pub fn load_model(args: &Args, device: &Device, examples: &[Example]) -> Result<(Llama, Tok)> {
    if args.model == "builtin" {
        let texts = examples
            .iter()
            .flat_map(|e| [e.prompt.as_str(), e.response.as_str()]);
        let tok = Tok::words(texts, args.max_vocab)?;
        return Ok((
            Llama::init(
                builtin_config(args.size, tok.vocab_size()),
                args.seed,
                device,
            )?,
            tok,
        ));
    }
    let path = Path::new(&args.model);
    if path.is_dir() {
        hf::load_dir(path, device)
    } else if path.extension().is_some_and(|e| e == "gguf") {
        gguf::load(path, device)
    } else if !path.exists() {
        bail!("missing model file: {} does not exist", path.display())
    } else {
        bail!(
            "{}: expected `builtin`, a model directory or a .gguf file",
            path.display()
        )
    }
}

pub fn load_examples(args: &Args) -> Result<Vec<Example>> {
    let examples = match &args.data {
        None => problems::generate(args.examples, args.seed),
        Some(path) => {
            let mut fields = Fields::preset(&args.preset)?;
            if let Some(prompt) = &args.prompt_fields {
                fields.prompt = prompt.clone();
            }
            if let Some(response) = &args.response_field {
                fields.response = response.clone();
            }
            data::load_jsonl(path, &fields)?
        }
    };
    if examples.is_empty() {
        bail!("empty dataset: no examples to train on");
    }
    Ok(examples)
}

pub fn load_data(args: &Args, tok: &Tok, examples: Vec<Example>) -> Result<DataSet> {
    let (train, heldout_examples) = split(examples, args.heldout, args.seed)?;
    Ok(DataSet {
        train: tokenize(&train, tok, args.max_len)?,
        heldout: tokenize(&heldout_examples, tok, args.max_len)?,
        heldout_examples,
    })
}

pub fn prepare_out(args: &Args) -> Result<PathBuf> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new("runs/finetune_llama").join(report::timestamp()));
    let occupied = out.exists() && std::fs::read_dir(&out)?.next().is_some();
    if args.resume && !occupied {
        bail!("--resume: {} holds no run to resume", out.display());
    }
    if occupied && !args.resume {
        if !args.overwrite {
            bail!("{} already exists; pass --resume to continue that run or --overwrite to replace it", out.display());
        }
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(&out)?;
    Ok(out)
}

pub fn train_config(args: &Args) -> TrainConfig {
    TrainConfig {
        steps: args.steps,
        micro_batch: args.micro_batch,
        accum: args.accum.max(1),
        lr: args
            .lr
            .unwrap_or(if args.model == "builtin" { 3e-3 } else { 1e-4 }),
        warmup_ratio: args.warmup_ratio,
        seed: args.seed,
        eval_every: args.eval_every,
        eval_samples: args.eval_samples,
        max_new_tokens: args.max_new_tokens,
        save_every: args.save_every,
        progress: !args.quiet,
        stop_after: args.stop_after,
        label: String::new(),
    }
}

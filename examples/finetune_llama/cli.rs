//! Command-line options. With no flags the run is the built-in demo: a small Llama trained from
//! scratch on generated word problems with SFT, GMT and random mask, then a comparison table.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Method {
    /// Plain AdamW (mask ratio 0).
    Sft,
    /// Gradient-Mask Tuning: mask the smallest |g| of each group.
    Gmt,
    /// Random mask at the same ratio.
    Random,
    /// Half Fine-Tuning: half of each layer's attention and MLP matrices frozen.
    Hft,
    /// SFT, then the smallest-magnitude fraction of the weight delta reset to pretrained.
    Oneoff,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Sft => "sft",
            Method::Gmt => "gmt",
            Method::Random => "random",
            Method::Hft => "hft",
            Method::Oneoff => "oneoff",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScopeArg {
    /// Each tensor is its own selection group (GMT as practised).
    PerTensor,
    /// One group per transformer block (embeddings, final norm and head form group 0).
    Layer,
    /// One group for the whole model.
    Global,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MaskedArg {
    /// A masked gradient counts as 0; moments decay, momentum still moves the weight.
    ZeroGrad,
    /// A masked entry is untouched (the paper's Eq. 1).
    Freeze,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Size {
    /// 0.75M parameters (4 layers, hidden 128), the demo default.
    Small,
    /// About 20K parameters (2 layers, hidden 32), for tests.
    Micro,
}

#[derive(Debug, Clone, Parser)]
#[command(
    args_override_self = true,
    about = "Fine-tune a Llama with Gradient-Mask Tuning (gradmask) and compare it with its baselines"
)]
pub struct Args {
    /// `builtin`, a Hugging Face model directory (config.json, *.safetensors, tokenizer.json), or a .gguf file.
    #[arg(long, default_value = "builtin")]
    pub model: String,
    /// Size of the built-in model.
    #[arg(long, value_enum, default_value = "small")]
    pub size: Size,
    /// One method. Without --method or --compare, runs --compare sft,gmt,random.
    #[arg(long, value_enum)]
    pub method: Option<Method>,
    /// Several methods with identical seeds and data, then a comparison table.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub compare: Option<Vec<Method>>,
    /// Fraction of each group's gradient entries masked (GMT, random, one-off drop).
    #[arg(long, default_value_t = 0.5)]
    pub mask_ratio: f64,
    #[arg(long, value_enum, default_value = "per-tensor")]
    pub scope: ScopeArg,
    #[arg(long, value_enum, default_value = "zero-grad")]
    pub masked: MaskedArg,
    /// Micro-batches accumulated per optimizer step (GMT masks the accumulated gradient).
    #[arg(long, default_value_t = 1)]
    pub accum: usize,
    /// Examples per micro-batch.
    #[arg(long, default_value_t = 32)]
    pub micro_batch: usize,
    /// Optimizer steps.
    #[arg(long, default_value_t = 300)]
    pub steps: u64,
    /// Peak learning rate (default: 3e-3 for the built-in model trained from scratch, 1e-4 for a
    /// pretrained one).
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, default_value_t = 0.03)]
    pub warmup_ratio: f64,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Clip the global gradient norm (0 disables).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Train every method once per seed: one number N (seeds --seed, --seed+1, ..., N in all) or a
    /// list (`1,2,3`). The seed drives the batch order, the random mask's draws, HFT's choice of
    /// frozen matrices and the built-in model's initialisation; the data and its held-out split
    /// stay those of --seed, so same-seed runs of different methods are paired.
    #[arg(long, value_delimiter = ',', num_args = 1)]
    pub seeds: Option<Vec<u64>>,
    /// Mask-ratio sweep: GMT and random mask (and one-off, if in --compare) at each of these
    /// ratios, for each seed; SFT and HFT once per seed. Writes mask_sweep.png.
    #[arg(
        long,
        value_delimiter = ',',
        num_args = 1,
        allow_negative_numbers = true,
        conflicts_with = "method"
    )]
    pub sweep_mask_ratio: Option<Vec<f64>>,
    /// A JSONL dataset instead of the generated word problems.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Field preset for --data: metamath {query, response}, magicoder {instruction, response}, alpaca {instruction, input, output}.
    #[arg(long, default_value = "metamath")]
    pub preset: String,
    /// Prompt fields for --data (comma-separated), overriding the preset.
    #[arg(long, value_delimiter = ',')]
    pub prompt_fields: Option<Vec<String>>,
    /// Response field for --data, overriding the preset.
    #[arg(long)]
    pub response_field: Option<String>,
    /// Generated problems (training plus held-out).
    #[arg(long, default_value_t = 6000)]
    pub examples: usize,
    /// Held-out examples.
    #[arg(long, default_value_t = 200)]
    pub heldout: usize,
    /// Vocabulary size of the built-in word tokenizer (built from the data).
    #[arg(long, default_value_t = 4096)]
    pub max_vocab: usize,
    /// Longest training sequence in tokens (longer ones are cut).
    #[arg(long, default_value_t = 256)]
    pub max_len: usize,
    /// Evaluate every this many steps (0: only at the end).
    #[arg(long, default_value_t = 100)]
    pub eval_every: u64,
    /// Held-out examples decoded for exact match.
    #[arg(long, default_value_t = 200)]
    pub eval_samples: usize,
    #[arg(long, default_value_t = 32)]
    pub max_new_tokens: usize,
    /// Checkpoint every this many steps (0: never).
    #[arg(long, default_value_t = 100)]
    pub save_every: u64,
    /// Output folder (default: runs/finetune_llama/<date-time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in --out from its latest checkpoints.
    #[arg(long)]
    pub resume: bool,
    /// Replace an existing --out folder.
    #[arg(long)]
    pub overwrite: bool,
    /// Load the model, print its perplexity and held-out scores, and stop.
    #[arg(long)]
    pub eval_only: bool,
    /// With --eval-only: print this many held-out generations.
    #[arg(long, default_value_t = 0)]
    pub show: usize,
    /// rayon threads: matmuls and the gradient selection (default: available cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// candle's element-wise thread pool, whose workers spin between ops (default 1: no spinning;
    /// more helps only on an otherwise idle machine).
    #[arg(long)]
    pub candle_threads: Option<usize>,
    /// Keep denormals (for measuring what flushing them saves).
    #[arg(long)]
    pub no_ftz: bool,
    /// Run on the first CUDA device (needs `--features cuda`).
    #[arg(long)]
    pub cuda: bool,
    /// Do not track mask stability (GMT and random mask track it on the CPU by default: one more
    /// read of the gradients per step).
    #[arg(long)]
    pub no_mask_stability: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Keep glibc's default mmap threshold (for measuring what `cpu::keep_freed_memory` saves).
    #[arg(long)]
    pub default_malloc: bool,
    /// Shard the optimizer's state over N ranks, as threads on the CPU (ZeRO style: each rank
    /// keeps m and v of its slice of the model and steps it; the thresholds are exact through
    /// all-reduced histograms, so the losses are those of one rank). One checkpoint file per rank;
    /// --resume needs the same N. 1: unsharded.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub shards: u64,
    /// Stop after this many steps as if killed, leaving the checkpoints (tests `--resume`).
    #[arg(long, hide = true)]
    pub stop_after: Option<u64>,
}

impl Args {
    /// The methods this run trains, in order.
    pub fn methods(&self) -> Vec<Method> {
        match (&self.compare, self.method) {
            (Some(list), _) => list.clone(),
            (None, Some(method)) => vec![method],
            (None, None) => vec![Method::Sft, Method::Gmt, Method::Random],
        }
    }
}

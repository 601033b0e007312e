//! The model: our differentiable Llama and its tokenizers, and the formats it loads and saves.
//! - `config`: shapes, parameter names (Hugging Face's) and roles;
//! - `llama`: the forward pass (training and cached generation);
//! - `tokenizer`: character-level and Hugging Face tokenizers;
//! - `hf`, `gguf`: Hugging Face directories (load and save) and GGUF files (load).

pub mod config;
pub mod gguf;
pub mod hf;
mod llama;
pub mod tokenizer;

pub use llama::*;

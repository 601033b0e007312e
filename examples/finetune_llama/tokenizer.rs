//! Tokenizers: a character-level one for the built-in model, and Hugging Face `tokenizers` for
//! pretrained models (loaded from `tokenizer.json`, or rebuilt from GGUF metadata in `gguf.rs`).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

/// Characters of the built-in vocabulary after the three control tokens: newline and printable ASCII.
fn char_vocab() -> Vec<char> {
    std::iter::once('\n')
        .chain((32u8..127).map(char::from))
        .collect()
}

pub enum Tok {
    /// `<pad>` = 0, `<bos>` = 1, `<eos>` = 2, then one token per character.
    Char { chars: Vec<char> },
    Hf {
        tokenizer: Box<tokenizers::Tokenizer>,
        eos: u32,
    },
}

impl Tok {
    pub fn chars() -> Tok {
        Tok::Char {
            chars: char_vocab(),
        }
    }

    /// Loads `tokenizer.json`; the end-of-sequence id is `eos` if given, else the first of the
    /// usual end tokens that the vocabulary has.
    pub fn from_file(path: &Path, eos: Option<u32>) -> Result<Tok> {
        if !path.exists() {
            bail!("missing tokenizer: {} does not exist", path.display());
        }
        let tokenizer = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| anyhow!("{}: not a valid tokenizer.json: {e}", path.display()))?;
        Self::from_hf(tokenizer, eos).with_context(|| path.display().to_string())
    }

    pub fn from_hf(tokenizer: tokenizers::Tokenizer, eos: Option<u32>) -> Result<Tok> {
        let eos = match eos {
            Some(id) => id,
            None => [
                "<|endoftext|>",
                "<|im_end|>",
                "</s>",
                "<|end_of_text|>",
                "<eos>",
            ]
            .iter()
            .find_map(|t| tokenizer.token_to_id(t))
            .ok_or_else(|| anyhow!("no end-of-sequence token found in the tokenizer"))?,
        };
        Ok(Tok::Hf {
            tokenizer: Box::new(tokenizer),
            eos,
        })
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Tok::Char { chars } => chars.len() + 3,
            Tok::Hf { tokenizer, .. } => tokenizer.get_vocab_size(true),
        }
    }

    pub fn eos(&self) -> u32 {
        match self {
            Tok::Char { .. } => 2,
            Tok::Hf { eos, .. } => *eos,
        }
    }

    /// Padding id; padded positions never enter the loss, so eos serves.
    pub fn pad(&self) -> u32 {
        match self {
            Tok::Char { .. } => 0,
            Tok::Hf { eos, .. } => *eos,
        }
    }

    /// Token ids of `text`, without special tokens added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Tok::Char { chars } => text
                .chars()
                .map(|c| {
                    chars
                        .iter()
                        .position(|&v| v == c)
                        .map(|i| i as u32 + 3)
                        .ok_or_else(|| anyhow!("character {c:?} is not in the built-in vocabulary (newline and printable ASCII)"))
                })
                .collect(),
            Tok::Hf { tokenizer, .. } => Ok(tokenizer
                .encode(text, false)
                .map_err(|e| anyhow!("tokenizer: {e}"))?
                .get_ids()
                .to_vec()),
        }
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            Tok::Char { chars } => Ok(ids
                .iter()
                .filter(|&&id| id >= 3)
                .filter_map(|&id| chars.get(id as usize - 3))
                .collect()),
            Tok::Hf { tokenizer, .. } => tokenizer
                .decode(ids, true)
                .map_err(|e| anyhow!("tokenizer: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_tokens_round_trip() {
        let tok = Tok::chars();
        let text = "Q: Ann has 3 pens.\nA: 3 + 4 = 7. #### 7";
        let ids = tok.encode(text).unwrap();
        assert!(ids
            .iter()
            .all(|&id| (3..tok.vocab_size() as u32).contains(&id)));
        assert_eq!(tok.decode(&ids).unwrap(), text);
        assert!(tok.encode("é").is_err());
        let missing = Tok::from_file(Path::new("/nonexistent/tokenizer.json"), None);
        assert!(format!("{:#}", missing.err().unwrap())
            .contains("missing tokenizer: /nonexistent/tokenizer.json"));
    }
}

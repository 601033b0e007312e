//! Tokenizers: Hugging Face `tokenizers` for pretrained models (loaded from `tokenizer.json`, or
//! rebuilt from GGUF metadata in `gguf.rs`), and for the built-in model a word-level tokenizer
//! whose vocabulary is built from the data: words and numbers (with their leading space) become
//! single tokens, so `7 + 5 = 12` is five tokens and arithmetic is a lookup of whole numbers. Every
//! printable ASCII character is also a token; a piece seen in no example becomes `<unk>` (the
//! vocabulary covers all of the generated data). It is a real `tokenizers::Tokenizer`
//! (WordLevel model, regex Split pre-tokenizer, Fuse decoder), saved as `tokenizer.json` with
//! checkpoints.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer, SplitDelimiterBehavior,
};

/// Pieces: a word, a number or a run of `#`, each with an optional leading space; one other
/// character with an optional leading space; or one whitespace character.
const PIECES: &str = r" ?\p{L}+| ?\p{N}+| ?#+| ?[^\s\p{L}\p{N}#]|\s";
const SPECIALS: [&str; 3] = ["<pad>", "<unk>", "<eos>"];

pub struct Tok {
    pub tokenizer: Box<tokenizers::Tokenizer>,
    eos: u32,
}

impl Tok {
    /// The built-in word-level tokenizer for `texts`: `<pad>` = 0, `<unk>` = 1, `<eos>` = 2, the
    /// printable ASCII characters and newline, then the pieces of `texts` by falling count (ties
    /// in byte order), up to `max_vocab` tokens in all.
    pub fn words<'a>(texts: impl Iterator<Item = &'a str>, max_vocab: usize) -> Result<Tok> {
        let pattern = SplitPattern::Regex(PIECES.to_string());
        let split = Split::new(pattern, SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| anyhow!("{e}"))?;
        let mut counts: HashMap<String, u64> = HashMap::new();
        for text in texts {
            let mut pieces = PreTokenizedString::from(text);
            split
                .pre_tokenize(&mut pieces)
                .map_err(|e| anyhow!("{e}"))?;
            for (piece, _, _) in pieces.get_splits(OffsetReferential::Original, OffsetType::Byte) {
                *counts.entry(piece.to_string()).or_default() += 1;
            }
        }
        let mut vocab: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
        vocab.extend(
            std::iter::once('\n')
                .chain((32u8..127).map(char::from))
                .map(String::from),
        );
        let mut pieces: Vec<(String, u64)> = counts
            .into_iter()
            .filter(|(p, _)| !vocab.contains(p))
            .collect();
        pieces.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let room = max_vocab.saturating_sub(vocab.len());
        vocab.extend(pieces.into_iter().take(room).map(|(p, _)| p));
        let ids: serde_json::Map<String, serde_json::Value> = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), serde_json::json!(i)))
            .collect();
        let added: Vec<serde_json::Value> = SPECIALS
            .iter()
            .enumerate()
            .map(|(id, content)| {
                serde_json::json!({"id": id, "content": content, "single_word": false,
                    "lstrip": false, "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
            "normalizer": null, "post_processor": null, "decoder": {"type": "Fuse"},
            "pre_tokenizer": {"type": "Split", "pattern": {"Regex": PIECES},
                "behavior": "Isolated", "invert": false},
            "model": {"type": "WordLevel", "vocab": ids, "unk_token": "<unk>"},
        });
        let tokenizer = tokenizers::Tokenizer::from_bytes(json.to_string().as_bytes())
            .map_err(|e| anyhow!("building the word tokenizer: {e}"))?;
        Ok(Tok {
            tokenizer: Box::new(tokenizer),
            eos: 2,
        })
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
        Ok(Tok {
            tokenizer: Box::new(tokenizer),
            eos,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    pub fn eos(&self) -> u32 {
        self.eos
    }

    /// Padding id; padded positions never enter the loss, so eos serves.
    pub fn pad(&self) -> u32 {
        self.eos
    }

    /// Token ids of `text`, without special tokens added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| anyhow!("tokenizer: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| anyhow!("tokenizer: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_tokens_round_trip() {
        let corpus = [
            "Q: Ann has 3 pens.\nA: 3 + 4 = 7. #### 7",
            "Ben has 12 pens.",
        ];
        let tok = Tok::words(corpus.iter().copied(), 1000).unwrap();
        let text = "Q: Ann has 12 pens.\nA: 3 + 4 = 7. #### 7";
        let ids = tok.encode(text).unwrap();
        // Q : ␣Ann ␣has ␣12 ␣pens . \n A : ␣3 ␣+ ␣4 ␣= ␣7 . ␣#### ␣7
        assert_eq!(ids.len(), 18, "{ids:?}");
        assert_eq!(tok.decode(&ids).unwrap(), text);
        // Unseen pieces become <unk> (dropped on decode); known single characters still encode.
        assert_eq!(
            tok.encode(" Zed!").unwrap(),
            vec![1, tok.encode("!").unwrap()[0]]
        );
        let missing = Tok::from_file(Path::new("/nonexistent/tokenizer.json"), None);
        assert!(format!("{:#}", missing.err().unwrap())
            .contains("missing tokenizer: /nonexistent/tokenizer.json"));
    }
}

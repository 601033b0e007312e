//! Examples, user JSONL with configurable fields, the seeded train/held-out split, tokenization
//! with a response-only loss, and the deterministic batch order (a function of seed and step, so a
//! resumed run sees exactly the batches an uninterrupted one would).

pub mod problems;

use std::io::BufRead;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

use crate::model::tokenizer::Tok;

/// One prompt/response pair; `answer` is what exact match compares.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub prompt: String,
    pub response: String,
    pub answer: String,
}

/// Which JSONL fields make the prompt (joined by a blank line, empty ones skipped) and the response.
#[derive(Debug, Clone)]
pub struct Fields {
    pub prompt: Vec<String>,
    pub response: String,
}

impl Fields {
    /// Presets: `metamath` {query, response}, `magicoder` {instruction, response}, `alpaca`
    /// {instruction, input, output}.
    pub fn preset(name: &str) -> Result<Fields> {
        let (prompt, response): (&[&str], &str) = match name {
            "metamath" => (&["query"], "response"),
            "magicoder" => (&["instruction"], "response"),
            "alpaca" => (&["instruction", "input"], "output"),
            other => bail!("unknown preset `{other}` (expected metamath, magicoder or alpaca)"),
        };
        Ok(Fields {
            prompt: prompt.iter().map(|s| s.to_string()).collect(),
            response: response.into(),
        })
    }
}

/// The final answer in a response: the text after the last `####` or `The answer is:`, else the
/// whole response; trimmed, with a trailing period dropped.
pub fn extract_answer(text: &str) -> String {
    let tail = ["####", "The answer is:"]
        .iter()
        .filter_map(|marker| text.rfind(marker).map(|at| &text[at + marker.len()..]))
        .min_by_key(|tail| tail.len())
        .unwrap_or(text);
    tail.trim().trim_end_matches('.').trim().to_string()
}

/// Reads a JSONL file; errors name the file and line.
pub fn load_jsonl(path: &Path, fields: &Fields) -> Result<Vec<Example>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open dataset {}", path.display()))?;
    let mut examples = Vec::new();
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let at = format!("{}:{}", path.display(), index + 1);
        let line = line.with_context(|| format!("{at}: cannot read the line"))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("{at}: not valid JSON"))?;
        let field = |name: &str| -> Result<String> {
            match value.get(name) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(other) => bail!("{at}: field `{name}` is not a string: {other}"),
                None => bail!("{at}: missing field `{name}` (set the fields with --preset or --prompt-fields/--response-field)"),
            }
        };
        let mut parts = Vec::new();
        for name in &fields.prompt {
            let part = field(name)?;
            if !part.trim().is_empty() {
                parts.push(part);
            }
        }
        let response = field(&fields.response)?;
        examples.push(Example {
            prompt: format!("Q: {}\nA: ", parts.join("\n\n")),
            answer: extract_answer(&response),
            response,
        });
    }
    if examples.is_empty() {
        bail!("{}: empty dataset (no JSON lines)", path.display());
    }
    Ok(examples)
}

/// Shuffles with `seed` and holds out `heldout` examples (at least one stays in training).
pub fn split(
    mut examples: Vec<Example>,
    heldout: usize,
    seed: u64,
) -> Result<(Vec<Example>, Vec<Example>)> {
    if examples.len() < 2 {
        bail!(
            "the dataset has {} example(s); need at least 2 for a train/held-out split",
            examples.len()
        );
    }
    examples.shuffle(&mut StdRng::seed_from_u64(seed));
    let heldout = heldout.clamp(1, examples.len() - 1);
    let held = examples.split_off(examples.len() - heldout);
    Ok((examples, held))
}

/// A tokenized example: `prompt ++ response ++ eos`; the loss covers the tokens after the prompt.
#[derive(Debug, Clone)]
pub struct Tokenized {
    pub ids: Vec<u32>,
    pub n_prompt: usize,
}

/// Tokenizes; sequences longer than `max_len` are cut (keeping at least one response token).
pub fn tokenize(examples: &[Example], tok: &Tok, max_len: usize) -> Result<Vec<Tokenized>> {
    examples
        .iter()
        .map(|example| {
            let mut ids = tok.encode(&example.prompt)?;
            let n_prompt = ids.len().min(max_len.saturating_sub(1)).max(1);
            ids.extend(tok.encode(&example.response)?);
            ids.push(tok.eos());
            ids.truncate(max_len.max(n_prompt + 1));
            Ok(Tokenized { ids, n_prompt })
        })
        .collect()
}

/// A padded micro-batch. `rows` are flat positions `b * t + pos` whose next token is a response
/// token, and `targets` those next tokens.
pub struct Batch {
    pub ids: Tensor,
    pub rows: Tensor,
    pub targets: Tensor,
    pub n_tokens: usize,
    pub n_targets: usize,
}

pub fn make_batch(items: &[&Tokenized], pad: u32, device: &Device) -> Result<Batch> {
    let t = items.iter().map(|x| x.ids.len()).max().unwrap_or(1);
    let mut ids = vec![pad; items.len() * t];
    let (mut rows, mut targets, mut n_tokens) = (Vec::new(), Vec::new(), 0);
    for (b, item) in items.iter().enumerate() {
        ids[b * t..b * t + item.ids.len()].copy_from_slice(&item.ids);
        n_tokens += item.ids.len();
        for pos in item.n_prompt - 1..item.ids.len() - 1 {
            rows.push((b * t + pos) as u32);
            targets.push(item.ids[pos + 1]);
        }
    }
    let n_targets = rows.len();
    Ok(Batch {
        ids: Tensor::from_vec(ids, (items.len(), t), device)?,
        rows: Tensor::from_vec(rows, n_targets, device)?,
        targets: Tensor::from_vec(targets, n_targets, device)?,
        n_tokens,
        n_targets,
    })
}

/// Example indices of micro-batch `micro` (global micro-batch number) of size `size`: walks seeded
/// per-epoch permutations of the training set.
pub fn micro_batch_indices(n_train: usize, size: usize, micro: u64, seed: u64) -> Vec<usize> {
    let mut out = Vec::with_capacity(size);
    let mut cached: Option<(u64, Vec<usize>)> = None;
    for j in 0..size as u64 {
        let position = micro * size as u64 + j;
        let epoch = position / n_train as u64;
        if cached.as_ref().map(|(e, _)| *e) != Some(epoch) {
            let mut perm: Vec<usize> = (0..n_train).collect();
            perm.shuffle(&mut StdRng::seed_from_u64(
                seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ));
            cached = Some((epoch, perm));
        }
        out.push(cached.as_ref().unwrap().1[(position % n_train as u64) as usize]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_extracted() {
        assert_eq!(extract_answer("3 + 4 = 7. #### 7"), "7");
        assert_eq!(extract_answer("so... The answer is: 18."), "18");
        assert_eq!(extract_answer(" 42 "), "42");
    }

    #[test]
    fn jsonl_errors_name_file_and_line() {
        let dir = std::env::temp_dir().join(format!("ftl-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.jsonl");
        std::fs::write(
            &path,
            "{\"query\": \"1+1?\", \"response\": \"#### 2\"}\n\n{\"query\": \"x\"}\n",
        )
        .unwrap();
        let err = load_jsonl(&path, &Fields::preset("metamath").unwrap()).unwrap_err();
        assert!(
            format!("{err:#}").contains("d.jsonl:3: missing field `response`"),
            "{err:#}"
        );
        std::fs::write(&path, "\n").unwrap();
        let err = load_jsonl(&path, &Fields::preset("alpaca").unwrap()).unwrap_err();
        assert!(format!("{err:#}").contains("empty dataset"), "{err:#}");
        std::fs::write(
            &path,
            "{\"instruction\": \"a\", \"input\": \"\", \"output\": \"b\"}\n",
        )
        .unwrap();
        let ok = load_jsonl(&path, &Fields::preset("alpaca").unwrap()).unwrap();
        assert_eq!(ok[0].prompt, "Q: a\nA: ");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn batch_order_is_a_function_of_seed_and_step() {
        let a = micro_batch_indices(10, 4, 7, 1);
        assert_eq!(a, micro_batch_indices(10, 4, 7, 1));
        // Each epoch visits every example once.
        let mut epoch: Vec<usize> = (0..5)
            .flat_map(|m| micro_batch_indices(10, 2, m, 3))
            .collect();
        epoch.sort();
        assert_eq!(epoch, (0..10).collect::<Vec<_>>());
    }
}

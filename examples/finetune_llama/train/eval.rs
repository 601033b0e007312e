//! The loss (response tokens only), held-out evaluation (loss and exact match by greedy decoding
//! with a KV cache), and the perplexity sanity check for loaded models.

use anyhow::Result;
use candle_core::{Device, Tensor, D};

use crate::data::{extract_answer, make_batch, Batch, Example, Tokenized};
use crate::model::tokenizer::Tok;
use crate::model::{KvCache, Llama};

/// Mean negative log-likelihood of the batch's target tokens (a scalar tensor, differentiable).
pub fn mean_nll(model: &Llama, batch: &Batch) -> Result<Tensor> {
    let hidden = model.hidden(&batch.ids, 0, None, None)?;
    let logits = model.logits(&hidden.index_select(&batch.rows, 0)?)?; // [n_targets, vocab]
    let max = logits.max_keepdim(1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let log_sum_exp = shifted.exp()?.sum_keepdim(1)?.log()?;
    let picked = shifted.gather(&batch.targets.unsqueeze(1)?, 1)?;
    Ok((log_sum_exp - picked)?.mean_all()?)
}

/// Token-weighted mean NLL over `data`, in batches of `batch_size`.
pub fn heldout_loss(model: &Llama, data: &[Tokenized], batch_size: usize, pad: u32) -> Result<f64> {
    model.no_grad(|| {
        let (mut total, mut count) = (0.0, 0usize);
        for chunk in data.chunks(batch_size.max(1)) {
            let items: Vec<&Tokenized> = chunk.iter().collect();
            let batch = make_batch(&items, pad, &model.device)?;
            total += mean_nll(model, &batch)?.to_scalar::<f32>()? as f64 * batch.n_targets as f64;
            count += batch.n_targets;
        }
        Ok(total / count.max(1) as f64)
    })
}

/// Greedy continuations of `prompts` (at most `max_new` tokens, stopping at `eos`). Prompts are
/// left-padded; padded keys are masked out. RoPE scores depend only on relative positions, so the
/// shift padding introduces does not change the result (up to rounding).
pub fn generate(
    model: &Llama,
    prompts: &[Vec<u32>],
    max_new: usize,
    eos: u32,
) -> Result<Vec<Vec<u32>>> {
    model.no_grad(|| {
        let (b, len) = (
            prompts.len(),
            prompts.iter().map(Vec::len).max().unwrap_or(0),
        );
        let pads: Vec<usize> = prompts.iter().map(|p| len - p.len()).collect();
        let mut ids = vec![eos; b * len];
        for (row, prompt) in prompts.iter().enumerate() {
            ids[row * len + pads[row]..(row + 1) * len].copy_from_slice(prompt);
        }
        let ids = Tensor::from_vec(ids, (b, len), &model.device)?;
        let mut cache = KvCache::default();
        let bias = pad_bias(&pads, len, 0, len, &model.device)?;
        let hidden = model.hidden(&ids, 0, Some(&bias), Some(&mut cache))?;
        let last: Vec<u32> = (0..b).map(|row| (row * len + len - 1) as u32).collect();
        let last = Tensor::from_vec(last, b, &model.device)?;
        let mut next = model
            .logits(&hidden.index_select(&last, 0)?)?
            .argmax(D::Minus1)?;
        let mut out = vec![Vec::new(); b];
        let mut done = vec![false; b];
        for step in 0..max_new {
            for (row, &token) in next.to_vec1::<u32>()?.iter().enumerate() {
                if !done[row] {
                    out[row].push(token);
                    done[row] = token == eos;
                }
            }
            if step + 1 == max_new || done.iter().all(|&d| d) {
                break;
            }
            let pos = len + step;
            let bias = pad_bias(&pads, 1, pos, pos + 1, &model.device)?;
            let hidden = model.hidden(&next.unsqueeze(1)?, pos, Some(&bias), Some(&mut cache))?;
            next = model.logits(&hidden)?.argmax(D::Minus1)?;
        }
        Ok(out)
    })
}

/// Attention bias `[b, 1, t, keys]` for queries at positions `start..start + t`: causal, and keys
/// in a row's left padding masked (a padded query may see itself, so no row is all -inf).
fn pad_bias(pads: &[usize], t: usize, start: usize, keys: usize, dev: &Device) -> Result<Tensor> {
    let mut data = Vec::with_capacity(pads.len() * t * keys);
    for &pad in pads {
        for i in start..start + t {
            data.extend((0..keys).map(|j| {
                let visible = j <= i && (j >= pad || j == i);
                if visible {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            }));
        }
    }
    Ok(Tensor::from_vec(data, (pads.len(), 1, t, keys), dev)?)
}

/// Fraction of `examples` whose greedy answer equals the reference answer; the first `show`
/// generations are printed.
pub fn exact_match(
    model: &Llama,
    tok: &Tok,
    examples: &[Example],
    max_new: usize,
    batch_size: usize,
    show: usize,
) -> Result<f64> {
    let mut correct = 0;
    let mut shown = 0;
    for chunk in examples.chunks(batch_size.max(1)) {
        let prompts = chunk
            .iter()
            .map(|e| tok.encode(&e.prompt))
            .collect::<Result<Vec<_>>>()?;
        for (example, ids) in chunk
            .iter()
            .zip(generate(model, &prompts, max_new, tok.eos())?)
        {
            let text = tok.decode(&ids)?;
            let hit = extract_answer(&text) == example.answer;
            correct += usize::from(hit);
            if shown < show {
                shown += 1;
                let verdict = if hit { "right" } else { "wrong" };
                println!(
                    "{}{text:?}  [{verdict}; reference {}]",
                    example.prompt, example.answer
                );
            }
        }
    }
    Ok(correct as f64 / examples.len().max(1) as f64)
}

/// Perplexity of `text` under the model (every token after the first is predicted).
pub fn perplexity(model: &Llama, tok: &Tok, text: &str) -> Result<f64> {
    let ids = tok.encode(text)?;
    let item = Tokenized { n_prompt: 1, ids };
    let loss = heldout_loss(model, &[item], 1, tok.pad())?;
    Ok(loss.exp())
}

/// The fixed English paragraph of the perplexity check.
pub const PARAGRAPH: &str = "The history of the city begins with a small settlement on the banks of \
the river. Over the centuries, farmers and traders built houses, markets and bridges, and the town \
grew into a busy center of commerce. Today, visitors come to walk through its old streets, to visit \
the museums, and to enjoy the food that the region is famous for.";

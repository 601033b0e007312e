//! The optimizer step of the example trainer's built-in model (a 4-layer Llama, hidden 128, GQA,
//! tied head: 38 tensors, 0.75M f32 entries), two ways, alternating in one process on the same
//! seeded gradients:
//! - `example path`: what the example trainer did on the CPU before it moved to the adapter (its
//!   `optim.rs`, removed in issue 12): zero host gradient buffers; copy each gradient out of candle (`to_vec1`) and add it in; step `gradmask::GmtAdamW`
//!   on host copies of the weights; copy the weights back into the vars (`Tensor::from_slice`,
//!   then `Var::set`);
//! - `adapter`: `gradmask::candle::GmtAdamW`, `accumulate` + `step_accumulated`, in place.
//!
//! Both take the same GMT step (mask ratio 0.5 per tensor, clipping at 1.0), and the bench checks
//! that their weights stay bit-identical. Prints the median step time of each and the bytes each
//! copies per step.
//!
//! Run: `cargo bench --features candle --bench candle_step`. Results: benches/NOTES.md.

use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use gradmask::{AdamWConfig, MaskConfig, TensorTable};

const VOCAB: usize = 192;
const ROUNDS: usize = 60;

fn shapes() -> Vec<(String, Vec<usize>)> {
    let (d, f, q, kv) = (128, 344, 128, 64);
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![VOCAB, d])];
    for l in 0..4 {
        for (name, shape) in [
            ("input_layernorm", vec![d]),
            ("self_attn.q_proj", vec![q, d]),
            ("self_attn.k_proj", vec![kv, d]),
            ("self_attn.v_proj", vec![kv, d]),
            ("self_attn.o_proj", vec![d, q]),
            ("post_attention_layernorm", vec![d]),
            ("mlp.gate_proj", vec![f, d]),
            ("mlp.up_proj", vec![f, d]),
            ("mlp.down_proj", vec![d, f]),
        ] {
            out.push((format!("model.layers.{l}.{name}.weight"), shape));
        }
    }
    out.push(("model.norm.weight".to_string(), vec![d]));
    out
}

fn seeded(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n as u64)
        .map(|i| {
            let draw = gradmask::rng::mix(seed, 0, i);
            ((draw >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * scale
        })
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

fn vars() -> Vec<(String, Var)> {
    shapes()
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            (
                name,
                Var::from_tensor(&seeded(&shape, i as u64, 0.1)).unwrap(),
            )
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let adamw = AdamWConfig {
        max_grad_norm: Some(1.0),
        ..AdamWConfig::default()
    };
    let mask = MaskConfig {
        mask_ratio: 0.5,
        ..MaskConfig::default()
    };
    let (lr, entries) = (
        3e-3,
        shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum::<usize>(),
    );

    // The example's path.
    let example_vars = vars();
    let lengths: Vec<usize> = example_vars.iter().map(|(_, v)| v.elem_count()).collect();
    let mut engine =
        gradmask::GmtAdamW::new(TensorTable::per_tensor(&lengths).unwrap(), adamw, mask).unwrap();
    let mut host_params: Vec<Vec<f32>> = example_vars
        .iter()
        .map(|(_, v)| v.flatten_all().unwrap().to_vec1().unwrap())
        .collect();
    let mut host_grads: Vec<Vec<f32>> = lengths.iter().map(|&n| vec![0.0; n]).collect();

    // The adapter.
    let adapter_vars = vars();
    let mut opt = gradmask::candle::GmtAdamW::new(adapter_vars.clone(), adamw, mask).unwrap();
    candle_nn::Optimizer::set_learning_rate(&mut opt, lr);

    let stores = |vars: &[(String, Var)], round: usize| {
        let mut store = GradStore::default();
        for (i, (_, v)) in vars.iter().enumerate() {
            store.insert(
                v.as_tensor(),
                seeded(v.dims(), 1000 * round as u64 + i as u64, 0.01),
            );
        }
        store
    };
    let (mut example_s, mut adapter_s) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (store_a, store_b) = (stores(&example_vars, round), stores(&adapter_vars, round));
        let t = Instant::now();
        host_grads.iter_mut().for_each(|g| g.fill(0.0));
        for ((_, var), acc) in example_vars.iter().zip(host_grads.iter_mut()) {
            let g = store_a
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            acc.iter_mut().zip(&g).for_each(|(a, g)| *a += g);
        }
        let mut p: Vec<&mut [f32]> = host_params.iter_mut().map(|p| p.as_mut_slice()).collect();
        let g: Vec<&[f32]> = host_grads.iter().map(|g| g.as_slice()).collect();
        engine.step(&mut p, &g, lr).unwrap();
        for ((_, var), data) in example_vars.iter().zip(&host_params) {
            var.set(&Tensor::from_slice(data, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
        example_s.push(t.elapsed().as_secs_f64());

        let t = Instant::now();
        opt.accumulate(&store_b).unwrap();
        opt.step_accumulated().unwrap();
        adapter_s.push(t.elapsed().as_secs_f64());
    }
    for ((name, a), (_, b)) in example_vars.iter().zip(&adapter_vars) {
        let (a, b) = (a.flatten_all().unwrap(), b.flatten_all().unwrap());
        let same = a
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .zip(b.to_vec1::<f32>().unwrap())
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{name}: the two paths disagree");
    }
    let bytes = entries * 4;
    println!(
        "{} tensors, {entries} f32 entries, {ROUNDS} alternating steps, weights bit-identical",
        lengths.len()
    );
    println!(
        "example path: median {:.3} ms/step, copies 3 x {:.2} MB per step (gradients out, weights in twice) + {:.2} MB of host gradient and weight buffers kept",
        median(example_s) * 1e3,
        bytes as f64 / 1e6,
        2.0 * bytes as f64 / 1e6
    );
    println!(
        "adapter:      median {:.3} ms/step, copies 0 bytes (gradient copies made: {})",
        median(adapter_s) * 1e3,
        opt.copies()
    );
}

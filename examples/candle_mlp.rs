//! A candle-nn MLP trained with GMT on the CPU: `gradmask::candle::GmtAdamW` in place of
//! `candle_nn::AdamW`, with gradients accumulated over 2 micro-batches (GMT masks their sum).
//!
//! cargo run --release --features candle --example candle_mlp

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{linear, loss, Linear, Optimizer, VarBuilder, VarMap};
use gradmask::{AdamWConfig, MaskConfig, Scope};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// Classifies 2-D points by quadrant: the label is 2 * (y > 0) + (x > 0).
struct Mlp {
    layers: Vec<Linear>,
}

impl Mlp {
    fn new(vb: VarBuilder) -> candle_core::Result<Self> {
        let dims = [2, 64, 64, 4];
        let layers = (0..3)
            .map(|i| linear(dims[i], dims[i + 1], vb.pp(format!("layers.{i}"))))
            .collect::<candle_core::Result<_>>()?;
        Ok(Mlp { layers })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x)?;
            if i + 1 < self.layers.len() {
                x = x.relu()?;
            }
        }
        Ok(x)
    }
}

fn batch(rng: &mut StdRng, dev: &Device, n: usize) -> candle_core::Result<(Tensor, Tensor)> {
    let x: Vec<f32> = (0..2 * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let x = Tensor::from_vec(x, (n, 2), dev)?;
    let positive = x.gt(0f32)?.to_dtype(DType::U32)?;
    let labels = (positive.narrow(1, 0, 1)? + (positive.narrow(1, 1, 1)? * 2.0)?)?;
    Ok((x, labels.squeeze(1)?))
}

fn main() -> candle_core::Result<()> {
    let (dev, mut rng) = (Device::Cpu, StdRng::seed_from_u64(42)); // weights: candle's own init
    let varmap = VarMap::new();
    let model = Mlp::new(VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    let adamw = AdamWConfig {
        grad_scale: Some(2.0),
        ..AdamWConfig::default()
    }; // mean of 2
    let mask = MaskConfig {
        mask_ratio: 0.8,
        scope: Scope::PerTensor,
        ..MaskConfig::default()
    };
    // The one changed line: was `candle_nn::AdamW::new(varmap.all_vars(), params)?`.
    let mut opt = gradmask::candle::GmtAdamW::new(&varmap, adamw, mask)?;
    opt.set_learning_rate(1e-2);
    let (test_x, test_y) = batch(&mut rng, &dev, 1000)?;
    for step in 1..=200 {
        for _ in 0..2 {
            let (x, y) = batch(&mut rng, &dev, 64)?;
            opt.accumulate(&loss::cross_entropy(&model.forward(&x)?, &y)?.backward()?)?;
        }
        opt.step_accumulated()?;
        if step % 50 == 0 {
            let logits = model.forward(&test_x)?;
            let right = logits
                .argmax(D::Minus1)?
                .eq(&test_y)?
                .to_dtype(DType::F32)?;
            let report = opt.last_report()?;
            let kept: u64 = report.groups.iter().map(|g| g.kept).sum();
            let len: u64 = report.groups.iter().map(|g| g.len).sum();
            println!(
                "step {step}: test loss {:.4}, accuracy {:.1}%, {kept} of {len} entries updated",
                loss::cross_entropy(&logits, &test_y)?.to_scalar::<f32>()?,
                100.0 * right.mean_all()?.to_scalar::<f32>()?
            );
        }
    }
    Ok(())
}

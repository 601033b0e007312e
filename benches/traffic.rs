//! `scripts/vgpu.sh cargo bench --bench traffic`: the global-memory traffic of one GMT step, as the
//! stand-in driver counts it (bytes and 32-byte sectors of every load, store and atomic of every
//! launch; `GRADMASK_VGPU_TRAFFIC`). Not a timing: the counts are a property of the kernels and
//! the same on any machine.
//!
//! For each parameter precision and scope, on Llama-3.2-1B shapes scaled down 600x (147 tensors,
//! ~2.1M parameters), log-normal gradients, mask ratio 0.2, the second of two steps (the first
//! bf16-master step reads the bf16 parameters to start its master copy):
//! - bytes are each launch's footprint: the distinct 32-byte sectors it read and wrote, the
//!   traffic to DRAM of a GPU whose caches serve every repeated access within a launch (a value
//!   every thread reads, a group's state, counts once);
//! - the selection's reads of g: the selection kernels' footprint in the gradient buffers, over
//!   the gradient bytes (the rest of the selection's bytes are per-group histograms and state,
//!   a fixed cost per group that these small shapes exaggerate);
//! - bytes per parameter of the selection, of the fused update, and in all, against the floor:
//!   the selection reads g once and the update reads g, p, m, v (and the master) and writes p, m,
//!   v (and the master): 32 B for f32 parameters and f32 gradients;
//! - sector efficiency: the bytes the lanes asked for over 32 x the sectors their
//!   warp-instructions touched (1.0: every sector fully used; above 1: lanes of a warp read the
//!   same bytes).
//!
//! Prints why it does nothing where the device is not the stand-in.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::sync::Arc;

use common::cuda_steps::{emulated, upload};
use common::{draw, Dist};
use cudarc::driver::{CudaStream, DevicePtr};
use gradmask::cuda::{self, CudaGmtAdamW};
use gradmask::{AdamWConfig, MaskConfig, Scope, TensorTable};
use half::bf16;

const SCALE: usize = 600;

#[derive(Default, Clone, Copy)]
struct Counts {
    /// Bytes of the distinct sectors read and written, launch by launch (the footprint).
    read: u64,
    written: u64,
    /// Bytes the lanes asked for, and the 32-byte sectors their warp-instructions touched.
    requested: u64,
    sectors: u64,
    thread_instructions: u64,
    /// Footprint bytes read from the gradient buffers.
    grad_read: u64,
}

/// Selection, update and mask-stability traffic of the launches logged since `from`; advances
/// `from`. With `GRADMASK_TRAFFIC_DETAIL=1`, prints each launch.
fn counts_since(
    log: &std::path::Path,
    from: &mut u64,
    grads: &[(u64, u64)],
) -> (Counts, Counts, Counts) {
    let detail = std::env::var("GRADMASK_TRAFFIC_DETAIL").is_ok_and(|v| v == "1");
    let mut file = std::fs::File::open(log).unwrap();
    file.seek(SeekFrom::Start(*from)).unwrap();
    let (mut select, mut update, mut stability) =
        (Counts::default(), Counts::default(), Counts::default());
    for line in BufReader::new(file).lines() {
        let line = line.unwrap();
        *from += line.len() as u64 + 1;
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let n = |k: &str| v[k].as_u64().unwrap();
        if detail {
            println!(
                "    {} grid {}: read {} written {}",
                v["kernel"],
                v["grid"],
                n("bytes_read"),
                n("bytes_written")
            );
        }
        let kernel = v["kernel"].as_str().unwrap();
        let c = if kernel.starts_with("gm_adamw") {
            &mut update
        } else if kernel.starts_with("gm_stability") {
            &mut stability
        } else {
            &mut select
        };
        c.read += 32 * n("unique_sectors_read");
        c.written += 32 * n("unique_sectors_written");
        c.requested += n("bytes_read") + n("bytes_written");
        c.sectors += n("sectors_read") + n("sectors_written");
        c.thread_instructions += n("thread_instructions");
        for a in v["per_allocation"].as_array().unwrap() {
            let base = a[0].as_u64().unwrap();
            if grads.iter().any(|&(start, _)| start == base) {
                c.grad_read += 32 * a[1].as_u64().unwrap();
            }
        }
    }
    (select, update, stability)
}

enum Kind {
    F32F32,
    F32Bf16,
    Bf16Master,
    Bf16Stochastic,
}

/// One step on fresh buffers; returns the gradient buffers' (address, bytes).
fn step(
    opt: &mut CudaGmtAdamW,
    stream: &Arc<CudaStream>,
    kind: &Kind,
    lengths: &[usize],
) -> Vec<(u64, u64)> {
    let f32_grads: Vec<Vec<f32>> = lengths
        .iter()
        .enumerate()
        .map(|(i, &n)| draw(Dist::LogNormal, n, i as u64))
        .collect();
    let bf16_grads: Vec<Vec<bf16>> = f32_grads
        .iter()
        .map(|g| g.iter().map(|&x| bf16::from_f32(x)).collect())
        .collect();
    let f32_params: Vec<Vec<f32>> = lengths.iter().map(|&n| vec![0.25; n]).collect();
    let bf16_params: Vec<Vec<bf16>> = lengths
        .iter()
        .map(|&n| vec![bf16::from_f32(0.25); n])
        .collect();
    let (d_f32, d_bf16) = (upload(stream, &f32_grads), upload(stream, &bf16_grads));
    let ranges = |bufs: Vec<(u64, usize)>| {
        bufs.into_iter()
            .map(|(a, n)| (a, n as u64))
            .collect::<Vec<_>>()
    };
    let grads = match kind {
        Kind::F32F32 => ranges(
            d_f32
                .iter()
                .map(|g| (g.device_ptr(stream).0, 4 * g.len()))
                .collect(),
        ),
        _ => ranges(
            d_bf16
                .iter()
                .map(|g| (g.device_ptr(stream).0, 2 * g.len()))
                .collect(),
        ),
    };
    match kind {
        Kind::F32F32 => opt.step_async(&mut upload(stream, &f32_params), &d_f32, 1e-3),
        Kind::F32Bf16 => opt.step_async(&mut upload(stream, &f32_params), &d_bf16, 1e-3),
        Kind::Bf16Master => {
            opt.step_bf16_master_async(&mut upload(stream, &bf16_params), &d_bf16, 1e-3)
        }
        Kind::Bf16Stochastic => {
            opt.step_bf16_stochastic_async(&mut upload(stream, &bf16_params), &d_bf16, 1e-3, 7)
        }
    }
    .unwrap();
    opt.synchronize().unwrap();
    grads
}

fn main() {
    let log = std::env::temp_dir().join(format!("gradmask-traffic-{}.jsonl", std::process::id()));
    std::fs::write(&log, "").unwrap();
    // Read by the stand-in when the driver starts, so before the first CUDA call.
    std::env::set_var("GRADMASK_VGPU_TRAFFIC", &log);
    let stream = match cuda::default_stream(0) {
        Ok(s) if emulated(&s) => s,
        Ok(_) => {
            return eprintln!(
                "traffic: counts come from the stand-in driver; run under scripts/vgpu.sh"
            )
        }
        Err(e) => return eprintln!("traffic: no device ({e}); run under scripts/vgpu.sh"),
    };
    let lengths: Vec<usize> = common::llama_1b_shapes(SCALE)
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    let n: u64 = lengths.iter().sum::<usize>() as u64;
    println!(
        "{} tensors, {n} parameters, mask ratio 0.2, second step of two",
        lengths.len()
    );
    println!("| parameters / gradients | scope | reads of g by the selection | selection B/param | update B/param | total B/param | floor | total / floor | sector efficiency |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut from = 0u64;
    let (mut instructions, mut measured) = (0u64, std::time::Duration::ZERO);
    let kinds = [
        (Kind::F32F32, "f32 / f32", 4u64, 32u64),
        (Kind::F32Bf16, "f32 / bf16", 2, 2 + 2 + 4 * 3 + 4 * 3),
        (
            Kind::Bf16Master,
            "bf16 + f32 master / bf16",
            2,
            2 + 2 + 4 * 3 + 2 + 4 * 3,
        ),
        (
            Kind::Bf16Stochastic,
            "bf16 stochastic / bf16",
            2,
            2 + 2 + 2 + 4 * 2 + 2 + 4 * 2,
        ),
    ];
    for (kind, name, g_bytes, floor) in kinds {
        for scope in [Scope::PerTensor, Scope::Global] {
            let table = TensorTable::per_tensor(&lengths).unwrap();
            let mask = MaskConfig {
                mask_ratio: 0.2,
                scope,
                ..MaskConfig::default()
            };
            let mut opt =
                CudaGmtAdamW::new(stream.clone(), table, AdamWConfig::default(), mask).unwrap();
            let grads = step(&mut opt, &stream, &kind, &lengths);
            counts_since(&log, &mut from, &grads);
            let start = std::time::Instant::now();
            let grads = step(&mut opt, &stream, &kind, &lengths);
            measured += start.elapsed();
            let (select, update, _) = counts_since(&log, &mut from, &grads);
            instructions += select.thread_instructions + update.thread_instructions;
            let per = |bytes: u64| bytes as f64 / n as f64;
            let total = select.read + select.written + update.read + update.written;
            let moved = (select.requested + update.requested) as f64
                / (32.0 * (select.sectors + update.sectors) as f64);
            println!(
                "| {name} | {scope:?} | {:.3} | {:.2} | {:.2} | {:.2} | {floor} | {:.3} | {moved:.3} |",
                select.grad_read as f64 / (n * g_bytes) as f64,
                per(select.read + select.written),
                per(update.read + update.written),
                per(total),
                per(total) / floor as f64,
            );
        }
    }
    stability_traffic(&stream, &log, &mut from, &lengths, n);
    // The interpreter's speed on these steps (uploads and the host's work included).
    println!(
        "interpreter: {instructions} PTX thread-instructions in {:.1} s of measured steps: {:.1} M/s",
        measured.as_secs_f64(),
        instructions as f64 / measured.as_secs_f64() / 1e6
    );
    let _ = std::fs::remove_file(&log);
}

/// The mask-stability pass (`track_stability`), per tensor at mask ratio 0.2: its bytes per
/// parameter against its floor (g read once more, and one bit of the last mask read and written).
fn stability_traffic(
    stream: &Arc<CudaStream>,
    log: &std::path::Path,
    from: &mut u64,
    lengths: &[usize],
    n: u64,
) {
    println!("\nwith mask stability tracked (per tensor, second step):");
    println!("| parameters / gradients | stability pass B/param | floor | pass / floor | update B/param |");
    println!("| --- | --- | --- | --- | --- |");
    for (kind, name, floor) in [
        (Kind::F32F32, "f32 / f32", 4.25),
        (Kind::Bf16Master, "bf16 + f32 master / bf16", 2.25),
    ] {
        let table = TensorTable::per_tensor(lengths).unwrap();
        let mask = MaskConfig {
            mask_ratio: 0.2,
            ..MaskConfig::default()
        };
        let mut opt =
            CudaGmtAdamW::new(stream.clone(), table, AdamWConfig::default(), mask).unwrap();
        opt.track_stability(true).unwrap();
        let grads = step(&mut opt, stream, &kind, lengths);
        counts_since(log, from, &grads);
        let grads = step(&mut opt, stream, &kind, lengths);
        let (_, update, stability) = counts_since(log, from, &grads);
        let per = |c: &Counts| (c.read + c.written) as f64 / n as f64;
        println!(
            "| {name} | {:.3} | {floor} | {:.3} | {:.2} |",
            per(&stability),
            per(&stability) / floor,
            per(&update)
        );
    }
}

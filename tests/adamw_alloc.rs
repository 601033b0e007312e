//! After the first step, a step allocates nothing that grows with the model: only the report's
//! `groups` vector (and whatever rayon's scheduler allocates for itself, a few small blocks).
//! A counting global allocator, on for a window of steps, measures it.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

use common::adamw_ref::{draw_grads, draw_params, views, views_mut};
use common::Dist;
use gradmask::{AdamWConfig, GmtAdamW, GroupStats, MaskConfig, MaskMode, TensorTable};
use half::bf16;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static BYTES: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);

fn count(size: usize) {
    if COUNTING.load(Relaxed) {
        BYTES.fetch_add(size, Relaxed);
        CALLS.fetch_add(1, Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting has no effect on
// the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout (every allocation goes through it).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: as for `dealloc`; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn steps_after_the_first_allocate_nothing_that_grows_with_the_model() {
    // 2.6M entries over 40 tensors: any per-step buffer of the model's size would be megabytes.
    let lengths: Vec<usize> = (0..40)
        .map(|t| 1000 + t * 3331 + (t % 3) * 100_000)
        .collect();
    let total: usize = lengths.iter().sum();
    let table = TensorTable::per_tensor(&lengths).unwrap();
    let cases = [
        ("f32 gmt", 0.5, MaskMode::Gmt, 0),
        ("f32 plain", 0.0, MaskMode::Gmt, 0),
        ("f32 random", 0.5, MaskMode::Random { seed: 1 }, 0),
        ("bf16 master gmt", 0.5, MaskMode::Gmt, 1),
        ("bf16 stochastic gmt", 0.5, MaskMode::Gmt, 2),
    ];
    for (name, ratio, mode, kind) in cases {
        let mask = MaskConfig {
            mask_ratio: ratio,
            ..MaskConfig::default()
        };
        let mut opt = GmtAdamW::new(table.clone(), AdamWConfig::default(), mask)
            .unwrap()
            .with_mask_mode(mode);
        let mut params = draw_params(&lengths, 1);
        let mut params_bf16: Vec<Vec<bf16>> = params
            .iter()
            .map(|t| t.iter().map(|&x| bf16::from_f32(x)).collect())
            .collect();
        let grads: Vec<Vec<f32>> = draw_grads(&lengths, &[Dist::LogNormal], 2, 1);
        let grads_bf16: Vec<Vec<bf16>> = draw_grads(&lengths, &[Dist::LogNormal], 2, 1);
        let (grads, grads_bf16) = (views(&grads), views(&grads_bf16));
        let mut step = |opt: &mut GmtAdamW| {
            let (p, p16) = (
                &mut views_mut(&mut params),
                &mut views_mut(&mut params_bf16),
            );
            let report = match kind {
                0 => opt.step(p, &grads, 1e-3),
                1 => opt.step_bf16_master(p16, &grads_bf16, 1e-3),
                _ => opt.step_bf16_stochastic(p16, &grads_bf16, 1e-3, 3),
            };
            assert!(!report.unwrap().skipped);
        };
        step(&mut opt); // first use: master weights, rayon's threads
        step(&mut opt);
        let steps = 5;
        BYTES.store(0, Relaxed);
        CALLS.store(0, Relaxed);
        COUNTING.store(true, Relaxed);
        for _ in 0..steps {
            step(&mut opt);
        }
        COUNTING.store(false, Relaxed);
        let (bytes, calls) = (BYTES.load(Relaxed), CALLS.load(Relaxed));
        // The views above and the report: a few hundred bytes to a few KiB per step; rayon may add
        // a block now and then. Anything proportional to the model would be >= 2.6 MB.
        let report = lengths.len() * std::mem::size_of::<GroupStats>();
        println!("{name}: {calls} allocations, {bytes} bytes in {steps} steps (report {report} B)");
        assert!(
            bytes < steps * (report + 4 * 1024) + 64 * 1024,
            "{name}: {bytes} bytes"
        );
        assert!(bytes < total / 16, "{name}");
    }
}

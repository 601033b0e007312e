//! Checkpoints: 2N steps equal N steps, save, load, N steps, bit for bit, for every precision and
//! mask mode; a checkpoint of another table, a truncated or a corrupt file is a typed error that
//! changes nothing.

mod common;

use std::path::PathBuf;

use common::adamw_ref::{draw_grads, draw_params, state, views, views_mut, State};
use common::{Dist, TempDir};
use gradmask::tuning::CPU_CHUNK_LEN;
use gradmask::{
    AdamWConfig, Error, GmtAdamW, MaskConfig, MaskMode, MaskedUpdate, Scope, TensorTable,
};
use half::bf16;

const LENGTHS: [usize; 5] = [3, 0, 1, 4099, CPU_CHUNK_LEN + 7];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    F32,
    F32Bf16Grads,
    Master,
    Stochastic,
}

fn optimizer(table: &TensorTable, ratio: f64) -> GmtAdamW {
    let config = AdamWConfig {
        weight_decay: 0.1,
        max_grad_norm: Some(0.02),
        ..AdamWConfig::default()
    };
    let mask = MaskConfig {
        mask_ratio: ratio,
        scope: Scope::PerTensor,
        masked: MaskedUpdate::ZeroGrad,
    };
    GmtAdamW::new(table.clone(), config, mask).unwrap()
}

/// Step `step` of `kind` on parameters held as f32 (bf16 kinds round them to bf16 and back).
fn step(opt: &mut GmtAdamW, kind: Kind, params: &mut Vec<Vec<f32>>, step: u64) {
    let grads: Vec<Vec<f32>> = draw_grads(&LENGTHS, &[Dist::LogNormal, Dist::Normal], 3, step);
    let bf16_grads: Vec<Vec<bf16>> =
        draw_grads(&LENGTHS, &[Dist::LogNormal, Dist::Normal], 3, step);
    let mut bf16_params: Vec<Vec<bf16>> = params
        .iter()
        .map(|t| t.iter().map(|&x| bf16::from_f32(x)).collect())
        .collect();
    let report = match kind {
        Kind::F32 => opt.step(&mut views_mut(params), &views(&grads), 1e-3),
        Kind::F32Bf16Grads => opt.step(&mut views_mut(params), &views(&bf16_grads), 1e-3),
        Kind::Master => {
            opt.step_bf16_master(&mut views_mut(&mut bf16_params), &views(&bf16_grads), 1e-3)
        }
        Kind::Stochastic => opt.step_bf16_stochastic(
            &mut views_mut(&mut bf16_params),
            &views(&bf16_grads),
            1e-3,
            77,
        ),
    };
    assert!(!report.unwrap().skipped);
    if matches!(kind, Kind::Master | Kind::Stochastic) {
        *params = bf16_params
            .iter()
            .map(|t| t.iter().map(|x| x.to_f32()).collect())
            .collect();
    }
}

/// Everything a resume must reproduce, as bits.
fn fingerprint(opt: &GmtAdamW, params: &[Vec<f32>]) -> State {
    state(opt, params)
}

#[test]
fn resume_after_save_and_load_is_bit_identical() {
    let table = TensorTable::per_tensor(&LENGTHS).unwrap();
    let dir = TempDir::new("resume");
    let cases = [
        (Kind::F32, 0.5, MaskMode::Gmt),
        (Kind::F32, 0.0, MaskMode::Gmt),
        (Kind::F32Bf16Grads, 0.7, MaskMode::Random { seed: 31 }),
        (Kind::Master, 0.9, MaskMode::Gmt),
        (Kind::Stochastic, 0.5, MaskMode::Random { seed: 32 }),
    ];
    let n = 3;
    for (kind, ratio, mode) in cases {
        let start = draw_params(&LENGTHS, 1);
        let start: Vec<Vec<f32>> = start
            .iter()
            .map(|t| t.iter().map(|&x| bf16::from_f32(x).to_f32()).collect())
            .collect();
        // 2N steps straight.
        let mut straight = optimizer(&table, ratio).with_mask_mode(mode);
        let mut params_a = start.clone();
        for s in 1..=2 * n {
            step(&mut straight, kind, &mut params_a, s);
        }
        // N steps, save, load into a fresh optimizer (mask mode left at its default: the
        // checkpoint restores it), N steps.
        let mut first = optimizer(&table, ratio).with_mask_mode(mode);
        let mut params_b = start.clone();
        for s in 1..=n {
            step(&mut first, kind, &mut params_b, s);
        }
        let path = dir.0.join(format!("{kind:?}-{ratio}.safetensors"));
        first.save(&path).unwrap();
        let mut resumed = optimizer(&table, ratio);
        resumed.load(&path).unwrap();
        assert_eq!(
            fingerprint(&resumed, &params_b),
            fingerprint(&first, &params_b),
            "{kind:?} state after load"
        );
        for s in n + 1..=2 * n {
            step(&mut resumed, kind, &mut params_b, s);
        }
        let (a, b) = (
            fingerprint(&straight, &params_a),
            fingerprint(&resumed, &params_b),
        );
        assert!(
            a == b,
            "{kind:?} ratio {ratio} {mode:?}: resumed state differs"
        );
        assert_eq!(b.step, 2 * n);
    }
    let leftovers: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// An optimizer with some steps behind it, and its saved checkpoint's bytes.
fn stepped(dir: &TempDir) -> (GmtAdamW, Vec<Vec<f32>>, PathBuf) {
    let table = TensorTable::per_tensor(&LENGTHS).unwrap();
    let mut opt = optimizer(&table, 0.5);
    let mut params = draw_params(&LENGTHS, 2);
    for s in 1..=2 {
        step(&mut opt, Kind::F32, &mut params, s);
    }
    let path = dir.0.join("good.safetensors");
    opt.save(&path).unwrap();
    step(&mut opt, Kind::F32, &mut params, 3); // so that a load would visibly change the state
    (opt, params, path)
}

fn assert_rejected(opt: &mut GmtAdamW, params: &[Vec<f32>], path: &std::path::Path, what: &str) {
    let before = fingerprint(opt, params);
    match opt.load(path) {
        Err(Error::Checkpoint { reason, .. }) => println!("{what}: {reason}"),
        other => panic!("{what}: expected Error::Checkpoint, got {other:?}"),
    }
    assert!(
        fingerprint(opt, params) == before,
        "{what}: a failed load changed the state"
    );
}

#[test]
fn a_checkpoint_of_another_table_is_rejected() {
    let dir = TempDir::new("other-table");
    let (_, _, path) = stepped(&dir);
    for (lengths, groups) in [
        (vec![3, 0, 1, 4099], vec![0, 1, 2, 3]), // a tensor fewer
        (vec![3, 0, 1, 4098, CPU_CHUNK_LEN + 7], vec![0, 1, 2, 3, 4]), // a length differs
        (vec![3, 0, 1, 4099, CPU_CHUNK_LEN + 7], vec![0, 0, 2, 3, 4]), // a group id differs
    ] {
        let table = TensorTable::new(&lengths, &groups).unwrap();
        let mut other = optimizer(&table, 0.5);
        let params: Vec<Vec<f32>> = lengths.iter().map(|&n| vec![0.5; n]).collect();
        assert_rejected(
            &mut other,
            &params,
            &path,
            &format!("table {lengths:?} {groups:?}"),
        );
    }
    let dense = TensorTable::per_tensor(&LENGTHS)
        .unwrap()
        .with_dense(&[true, false, false, false, false])
        .unwrap();
    assert_rejected(
        &mut optimizer(&dense, 0.5),
        &[],
        &path,
        "dense flags differ",
    );
}

#[test]
fn truncated_corrupt_and_missing_files_are_rejected() {
    let dir = TempDir::new("corrupt");
    let (mut opt, params, path) = stepped(&dir);
    let good = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let bad = dir.0.join("bad.safetensors");
    for cut in [
        0,
        5,
        8,
        8 + header_len / 2,
        8 + header_len,
        good.len() / 2,
        good.len() - 1,
    ] {
        std::fs::write(&bad, &good[..cut]).unwrap();
        assert_rejected(
            &mut opt,
            &params,
            &bad,
            &format!("truncated to {cut} of {} bytes", good.len()),
        );
    }
    // One flipped bit in the length prefix, the header, the first and the last data bytes.
    for at in [2, 8 + header_len / 3, 8 + header_len, good.len() - 1] {
        let mut corrupt = good.clone();
        corrupt[at] ^= 0x10;
        std::fs::write(&bad, &corrupt).unwrap();
        assert_rejected(
            &mut opt,
            &params,
            &bad,
            &format!("bit flipped at byte {at}"),
        );
    }
    // A header that still parses but says another step: the checksum covers it.
    let text = String::from_utf8_lossy(&good[8..8 + header_len]).to_string();
    let edited = text.replacen("\"step\":\"2\"", "\"step\":\"9\"", 1);
    assert_ne!(edited, text, "the header holds the step");
    let mut corrupt = good.clone();
    corrupt[8..8 + header_len].copy_from_slice(edited.as_bytes());
    std::fs::write(&bad, &corrupt).unwrap();
    assert_rejected(&mut opt, &params, &bad, "step edited in the header");
    assert_rejected(
        &mut opt,
        &params,
        &dir.0.join("missing.safetensors"),
        "missing file",
    );
    // The good file still loads.
    opt.load(&path).unwrap();
    assert_eq!(opt.step_count(), 2);
}

#[test]
fn saves_replace_atomically_and_report_errors() {
    let dir = TempDir::new("atomic");
    let (mut opt, mut params, path) = stepped(&dir);
    // Overwrite the checkpoint of step 2 with the one of step 3.
    opt.save(&path).unwrap();
    let mut loaded = optimizer(opt.table(), 0.5);
    loaded.load(&path).unwrap();
    assert!(fingerprint(&loaded, &params) == fingerprint(&opt, &params));
    step(&mut opt, Kind::F32, &mut params, 4);
    let missing_dir = dir.0.join("no-such-dir").join("x.safetensors");
    assert!(matches!(
        opt.save(&missing_dir),
        Err(Error::Checkpoint { .. })
    ));
    assert!(!missing_dir.exists());
    let names: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names, vec!["good.safetensors".to_string()]);
}

#[test]
fn empty_tables_round_trip() {
    let dir = TempDir::new("empty");
    for lengths in [vec![], vec![0, 0]] {
        let table = TensorTable::per_tensor(&lengths).unwrap();
        let mut opt = optimizer(&table, 0.5);
        let mut params: Vec<Vec<f32>> = lengths.iter().map(|_| Vec::new()).collect();
        let grads: Vec<Vec<f32>> = params.clone();
        assert_eq!(
            opt.step(&mut views_mut(&mut params), &views(&grads), 1e-3)
                .unwrap()
                .step,
            1
        );
        let path = dir.0.join(format!("empty-{}.safetensors", lengths.len()));
        opt.save(&path).unwrap();
        let mut loaded = optimizer(&table, 0.5);
        loaded.load(&path).unwrap();
        assert_eq!(loaded.step_count(), 1);
    }
}

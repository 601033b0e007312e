//! Tensor names in checkpoints (`GmtAdamW::set_tensor_names`, what `gradmask::candle` records):
//! a named checkpoint loads into an optimizer with the same names or none; a checkpoint written
//! before names existed (none) loads into a named optimizer; other names are `Error::Var` naming
//! the first tensor that differs, and change nothing; bad names are rejected.

use gradmask::{AdamWConfig, Error, GmtAdamW, MaskConfig, TensorTable, VarProblem};

/// Sizes 3, 0, 1 and an odd one.
const LENGTHS: [usize; 4] = [3, 0, 1, 1001];

fn names(prefix: &str) -> Vec<String> {
    (0..LENGTHS.len())
        .map(|i| format!("{prefix}.{i}"))
        .collect()
}

/// An optimizer after one seeded step.
fn stepped(seed: u32) -> GmtAdamW {
    let table = TensorTable::per_tensor(&LENGTHS).unwrap();
    let mask = MaskConfig {
        mask_ratio: 0.5,
        ..MaskConfig::default()
    };
    let mut opt = GmtAdamW::new(table, AdamWConfig::default(), mask).unwrap();
    let grads: Vec<Vec<f32>> = LENGTHS
        .iter()
        .enumerate()
        .map(|(t, &n)| {
            (0..n as u32)
                .map(|i| ((i * 7919 + t as u32 * 104_729 + seed) % 1000) as f32 / 1e3 - 0.5)
                .collect()
        })
        .collect();
    let mut params: Vec<Vec<f32>> = LENGTHS.iter().map(|&n| vec![0.5; n]).collect();
    let mut p: Vec<&mut [f32]> = params.iter_mut().map(Vec::as_mut_slice).collect();
    let g: Vec<&[f32]> = grads.iter().map(Vec::as_slice).collect();
    opt.step(&mut p, &g, 1e-3).unwrap();
    opt
}

#[test]
fn names_are_recorded_checked_and_optional() {
    let dir = std::env::temp_dir().join(format!("gradmask-names-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (named_file, plain_file) = (dir.join("named.safetensors"), dir.join("plain.safetensors"));
    let mut saved = stepped(1);
    saved.save(&plain_file).unwrap(); // no names: the format before names
    saved.set_tensor_names(&names("model")).unwrap();
    saved.save(&named_file).unwrap();

    for file in [&named_file, &plain_file] {
        for with_names in [true, false] {
            let mut opt = stepped(2);
            if with_names {
                opt.set_tensor_names(&names("model")).unwrap();
            }
            opt.load(file).unwrap();
            assert_eq!(
                opt.moments(),
                saved.moments(),
                "{file:?} names {with_names}"
            );
        }
    }

    // Other names: the first that differs is named; nothing changes.
    let mut other = stepped(2);
    let mut theirs = names("model");
    theirs[2] = "model.two".to_string();
    other.set_tensor_names(&theirs).unwrap();
    let (m, v) = (other.moments().0.to_vec(), other.moments().1.to_vec());
    match other.load(&named_file) {
        Err(Error::Var {
            var,
            problem: VarProblem::Checkpoint { found, .. },
        }) => assert_eq!((var.as_str(), found.as_str()), ("model.two", "model.2")),
        r => panic!("expected Error::Var, got {r:?}"),
    }
    assert_eq!((other.moments().0, other.moments().1), (&m[..], &v[..]));
    assert_eq!(other.step_count(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_names_are_rejected() {
    let mut opt = stepped(1);
    assert!(opt.set_tensor_names(&names("a")[..3]).is_err());
    let mut bad = names("a");
    bad[1] = "two\nlines".to_string();
    assert!(matches!(
        opt.set_tensor_names(&bad),
        Err(Error::InvalidConfig { .. })
    ));
}

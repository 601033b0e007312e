//! Proof that the stand-in driver's checks bite. Each case copies `kernels/`, plants one defect,
//! compiles the copy with the build's own nvcc and flags (`OUT_DIR/nvcc.txt`, PTX only), and runs
//! [`probe`] in a child process with `GRADMASK_KERNELS_DIR` pointing at the copy. The child must
//! fail, and the test says what caught the defect: one of the interpreter's checks (its message on
//! stderr names it) or the comparison with the CPU engine. A control run of the unmodified copy
//! must pass, so that a failure means the defect.
//!
//! Runs only where asked (`GRADMASK_VGPU_DEFECTS=1` under `scripts/vgpu.sh`, as CI does): it needs
//! nvcc and the stand-in driver, and takes a minute or two on the 2-core machine.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::cuda_steps::{download, gpu, upload};
use common::{draw, Dist};
use gradmask::cuda::{CudaGmtAdamW, CudaSelector};
use gradmask::{AdamWConfig, CpuSelector, GmtAdamW, MaskConfig, Scope, TensorTable};

/// Tensors of 1, 3 and odd lengths, one spanning 4 GPU chunks (so a group has several blocks and
/// the last-block ticket matters), and a group large enough to compact candidates.
const LENGTHS: [usize; 4] = [1, 3, 70_001, 200_003];

struct Defect {
    what: &'static str,
    file: &'static str,
    find: &'static str,
    replace: &'static str,
    /// What may catch it: an interpreter check (its name) or "mismatch" (the comparison with
    /// the CPU engine), as observed; the first to fire stops the probe.
    caught_by: &'static [&'static str],
}

const DEFECTS: [Defect; 6] = [
    Defect {
        what: "a removed __syncthreads (histogram zeroed while other warps count)",
        file: "select.cuh",
        find: "    __syncthreads();\n    double sum_sq = 0.0;",
        replace: "    double sum_sq = 0.0;",
        // The other warps' atomics read bins not yet zeroed: initcheck fires before racecheck.
        caught_by: &["initcheck", "racecheck"],
    },
    Defect {
        what: "a removed __threadfence before the last-block ticket",
        file: "select.cuh",
        find: "    __threadfence();  // this block's histogram and candidate writes before its ticket\n",
        replace: "",
        caught_by: &["racecheck"],
    },
    Defect {
        what: "an off-by-one in the tail loop's bound",
        file: "gm_common.cuh",
        find: "i < chunk.len; i += blockDim.x) f(d_data[i]);",
        replace: "i <= chunk.len; i += blockDim.x) f(d_data[i]);",
        caught_by: &["memcheck", "mismatch"],
    },
    Defect {
        what: "a wrong shuffle source lane in the block scan",
        file: "gm_common.cuh",
        find: "__shfl_up_sync(0xffffffffu, total, offset)",
        replace: "__shfl_up_sync(0xffffffffu, total, offset + 1)",
        caught_by: &["mismatch"],
    },
    Defect {
        what: "a histogram bin off by one",
        file: "select.cuh",
        find: "if (select) hist_add(s_hist, key >> shift);",
        replace: "if (select) hist_add(s_hist, (key >> shift) + 1);",
        caught_by: &["memcheck", "mismatch"],
    },
    Defect {
        what: "an uninitialised shared counter",
        file: "select.cuh",
        find: "    if (threadIdx.x == 0) s_cand_count = 0;\n",
        replace: "",
        caught_by: &["initcheck"],
    },
];

/// The selection and one AdamW step on the device, each against the CPU engine: run in a child
/// process by `planted_defects_are_caught`, with the kernels it points at.
#[test]
#[ignore = "run by planted_defects_are_caught, in a child process with planted kernels"]
fn probe() {
    let stream = gpu("probe").expect("the probe needs a device");
    let grads: Vec<Vec<f32>> = LENGTHS
        .iter()
        .enumerate()
        .map(|(i, &n)| draw(Dist::LogNormal, n, 40 + i as u64))
        .collect();
    let views: Vec<&[f32]> = grads.iter().map(|g| &g[..]).collect();
    let table = TensorTable::new(&LENGTHS, &[0, 0, 1, 1]).unwrap();
    let device = upload(&stream, &grads);
    for scope in [Scope::PerTensor, Scope::Groups] {
        let want = CpuSelector::new(&table, scope)
            .select(&views, 0.3)
            .unwrap()
            .clone();
        let mut selector = CudaSelector::new(stream.clone(), &table, scope).unwrap();
        selector.select(&device, 0.3).unwrap();
        selector.copy_stats_async().unwrap();
        let got = selector.stats().unwrap();
        for (g, (a, b)) in want.groups.iter().zip(&got.groups).enumerate() {
            assert_eq!(
                (a.threshold_key, a.kept, a.non_finite),
                (b.threshold_key, b.kept, b.non_finite),
                "mismatch: selection {scope:?} group {g}"
            );
            assert!(
                (a.sum_sq - b.sum_sq).abs() <= 1e-9 * a.sum_sq,
                "mismatch: sum_sq {scope:?} group {g}"
            );
        }
    }
    let mask = MaskConfig {
        mask_ratio: 0.3,
        ..MaskConfig::default()
    };
    let mut cpu = GmtAdamW::new(table.clone(), AdamWConfig::default(), mask).unwrap();
    let mut gpu_opt =
        CudaGmtAdamW::new(stream.clone(), table, AdamWConfig::default(), mask).unwrap();
    let mut params: Vec<Vec<f32>> = LENGTHS.iter().map(|&n| vec![0.5; n]).collect();
    let mut d_params = upload(&stream, &params);
    gpu_opt.step_async(&mut d_params, &device, 1e-3).unwrap();
    let mut p_views: Vec<&mut [f32]> = params.iter_mut().map(|p| &mut p[..]).collect();
    cpu.step(&mut p_views, &views, 1e-3).unwrap();
    assert_eq!(
        download(&stream, &d_params),
        params,
        "mismatch: parameters after a step"
    );
}

/// The build's nvcc and flags, if this build compiled its kernels.
fn nvcc_recipe() -> Option<Vec<String>> {
    let text = std::fs::read_to_string(concat!(env!("OUT_DIR"), "/nvcc.txt")).ok()?;
    Some(text.lines().map(str::to_string).collect())
}

/// A copy of `kernels/` with `defect` planted (none for the control), compiled to
/// `<dir>/out/<name>.fatbin` for every kernel file. Returns the output folder.
fn build_variant(dir: &Path, defect: Option<&Defect>, recipe: &[String]) -> PathBuf {
    let src = dir.join("kernels");
    let out = dir.join("out");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    for entry in std::fs::read_dir("kernels").unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut text = std::fs::read_to_string(&path).unwrap();
        if let Some(d) = defect.filter(|d| d.file == name) {
            assert_eq!(
                text.matches(d.find).count(),
                1,
                "{}: the snippet to change is not in {name} exactly once",
                d.what
            );
            text = text.replace(d.find, d.replace);
        }
        std::fs::write(src.join(&name), text).unwrap();
    }
    for entry in std::fs::read_dir("kernels").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "cu") {
            continue;
        }
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let include = format!("-I{}", src.display());
        let status = Command::new(&recipe[0])
            .args(recipe[1..].iter().map(|f| {
                if f == "-Ikernels" {
                    include.as_str()
                } else {
                    f.as_str()
                }
            }))
            .arg("-gencode=arch=compute_90,code=compute_90")
            .arg("-o")
            .arg(out.join(format!("{stem}.fatbin")))
            .arg(src.join(format!("{stem}.cu")))
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "nvcc failed: {}",
            String::from_utf8_lossy(&status.stderr)
        );
    }
    out
}

/// Runs the probe against the kernels in `out`; returns (passed, its stderr and stdout).
fn run_probe(out: &Path) -> (bool, String) {
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "probe",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("GRADMASK_KERNELS_DIR", out)
        .env("GRADMASK_VGPU_QUIET", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&child.stderr),
        String::from_utf8_lossy(&child.stdout)
    );
    (child.status.success(), text)
}

#[test]
fn planted_defects_are_caught() {
    if std::env::var("GRADMASK_VGPU_DEFECTS").is_err() {
        eprintln!("skipping: needs GRADMASK_VGPU_DEFECTS=1 under scripts/vgpu.sh (CI sets both)");
        return;
    }
    let Some(recipe) = nvcc_recipe() else {
        eprintln!("skipping: this build did not compile its kernels with nvcc");
        return;
    };
    let root = std::env::temp_dir().join(format!("gradmask-defects-{}", std::process::id()));
    let control = build_variant(&root.join("control"), None, &recipe);
    let (passed, text) = run_probe(&control);
    assert!(
        passed,
        "the unmodified kernels must pass the probe:\n{text}"
    );
    for (i, defect) in DEFECTS.iter().enumerate() {
        let out = build_variant(&root.join(format!("defect-{i}")), Some(defect), &recipe);
        let (passed, text) = run_probe(&out);
        assert!(!passed, "{}: NOT caught", defect.what);
        let check = ["racecheck", "initcheck", "memcheck", "synccheck"]
            .into_iter()
            .find(|c| text.contains(&format!("gradmask-vgpu: {c}:")));
        let by = match check {
            Some(c) => c,
            None if text.contains("mismatch") => "mismatch",
            None => "nothing recognised",
        };
        eprintln!("{}: caught by {by}", defect.what);
        assert!(
            defect.caught_by.contains(&by),
            "{}: expected {:?}, got {by}:\n{text}",
            defect.what,
            defect.caught_by
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// The host-side defect: reading a step's results from pinned memory before the stream is
/// synchronised. The stand-in runs stream work only when the host synchronises (as a GPU may lag
/// the host), so the early read sees the bytes from before the copy, and the comparison with the
/// CPU engine catches it; after the sync the same bytes match.
#[test]
fn a_host_read_before_the_stream_sync_sees_stale_results() {
    let Some(stream) = gpu("a_host_read_before_the_stream_sync_sees_stale_results") else {
        return;
    };
    if std::env::var("GRADMASK_VGPU_STREAMS").is_ok_and(|v| v == "eager") {
        eprintln!("skipping: eager streams run work at enqueue, so nothing is stale");
        return;
    }
    let n = 70_001;
    let grads = vec![draw::<f32>(Dist::Normal, n, 7)];
    let table = TensorTable::per_tensor(&[n]).unwrap();
    let mask = MaskConfig {
        mask_ratio: 0.3,
        ..MaskConfig::default()
    };
    let mut params = vec![vec![0.5f32; n]];
    let mut d_params = upload(&stream, &params);
    let mut gpu_opt =
        CudaGmtAdamW::new(stream.clone(), table.clone(), AdamWConfig::default(), mask).unwrap();
    gpu_opt
        .step_async(&mut d_params, &upload(&stream, &grads), 1e-3)
        .unwrap();
    let mut cpu = GmtAdamW::new(table, AdamWConfig::default(), mask).unwrap();
    cpu.step(&mut [&mut params[0][..]], &[&grads[0][..]], 1e-3)
        .unwrap();
    // SAFETY: the pinned buffer is only read through as_slice below.
    let mut pinned = unsafe { stream.context().alloc_pinned::<f32>(n) }.unwrap();
    stream.memcpy_dtoh(&d_params[0], &mut pinned).unwrap();
    // The planted defect: read without waiting for the stream (cudarc's own wait is a no-op on a
    // single stream; see src/cuda/pinned.rs).
    let early = pinned.as_slice().unwrap().to_vec();
    assert_ne!(
        early, params[0],
        "the early read saw the results: the missing sync went unnoticed"
    );
    stream.synchronize().unwrap();
    assert_eq!(
        pinned.as_slice().unwrap(),
        &params[0][..],
        "after the sync the results match the CPU engine"
    );
}

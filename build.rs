//! Compiles `kernels/*.cu` into fatbins with nvcc and embeds them (see README "Kernels").
//!
//! nvcc is looked up in: $NVCC, $CUDA_HOME/bin, $CUDA_PATH/bin, $PATH, /usr/local/cuda/bin.
//! - GRADMASK_CUDA_ARCHS: comma-separated SASS targets (default "80,90"); PTX is added for the highest.
//! - GRADMASK_PREBUILT_KERNELS: a folder of `<name>.fatbin` files to embed instead of compiling
//!   (a machine with a GPU but no nvcc).
//! - GRADMASK_REQUIRE_KERNELS=1: fail the build instead of building without kernels (CI uses it).
//!
//! With kernels, `cfg(gradmask_kernels)` is set. Without nvcc the crate still builds; every CUDA
//! entry point then returns `Error::KernelsNotBuilt`. A kernel that does not compile fails the build.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const ENV_VARS: [&str; 7] = [
    "NVCC",
    "CUDA_HOME",
    "CUDA_PATH",
    "PATH",
    "GRADMASK_CUDA_ARCHS",
    "GRADMASK_PREBUILT_KERNELS",
    "GRADMASK_REQUIRE_KERNELS",
];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(gradmask_kernels)");
    println!("cargo::rerun-if-changed=kernels");
    for var in ENV_VARS {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let mut sources: Vec<PathBuf> = fs::read_dir("kernels")
        .expect("kernels/ is missing")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    sources.sort();
    for source in &sources {
        println!("cargo::rerun-if-changed={}", source.display());
    }

    let built = if let Ok(dir) = env::var("GRADMASK_PREBUILT_KERNELS") {
        Some(prebuilt(Path::new(&dir), &sources, &out_dir))
    } else if let Some(nvcc) = find_nvcc() {
        Some(
            sources
                .iter()
                .map(|s| compile(&nvcc, s, &out_dir))
                .collect(),
        )
    } else {
        if env::var("GRADMASK_REQUIRE_KERNELS").is_ok_and(|v| v == "1") {
            panic!("GRADMASK_REQUIRE_KERNELS=1 but no nvcc was found (run scripts/install-cuda.sh and set CUDA_HOME)");
        }
        println!(
            "cargo::warning=gradmask: nvcc not found, building without CUDA kernels. \
             Run scripts/install-cuda.sh and set CUDA_HOME to the path it prints, then rebuild."
        );
        None
    };

    let mut table = String::from("/// The embedded kernel images: (name, fatbin).\npub const KERNELS: &[(&str, &[u8])] = &[\n");
    if let Some(images) = &built {
        println!("cargo::rustc-cfg=gradmask_kernels");
        for (name, path) in images {
            table.push_str(&format!(
                "    ({name:?}, include_bytes!({:?})),\n",
                path.display().to_string()
            ));
        }
    }
    table.push_str("];\n");
    fs::write(out_dir.join("kernels.rs"), table).unwrap();
}

/// nvcc from the documented search order.
fn find_nvcc() -> Option<PathBuf> {
    if let Ok(nvcc) = env::var("NVCC") {
        return Some(PathBuf::from(nvcc));
    }
    let mut dirs: Vec<PathBuf> = ["CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(|v| env::var(v).ok())
        .map(|d| Path::new(&d).join("bin"))
        .collect();
    if let Ok(path) = env::var("PATH") {
        dirs.extend(env::split_paths(&path));
    }
    dirs.push(PathBuf::from("/usr/local/cuda/bin"));
    dirs.into_iter()
        .map(|d| d.join("nvcc"))
        .find(|p| p.is_file())
}

/// The SASS targets, plus PTX for the highest one.
fn gencode_flags() -> Vec<String> {
    let archs = env::var("GRADMASK_CUDA_ARCHS").unwrap_or_else(|_| "80,90".to_string());
    let mut archs: Vec<u32> = archs
        .split(',')
        .map(|a| {
            a.trim()
                .parse()
                .unwrap_or_else(|_| panic!("GRADMASK_CUDA_ARCHS: bad arch {a:?}"))
        })
        .collect();
    archs.sort_unstable();
    let mut flags: Vec<String> = archs
        .iter()
        .map(|a| format!("-gencode=arch=compute_{a},code=sm_{a}"))
        .collect();
    let top = archs.last().expect("GRADMASK_CUDA_ARCHS is empty");
    flags.push(format!("-gencode=arch=compute_{top},code=compute_{top}"));
    flags
}

/// Compiles one .cu into OUT_DIR/<name>.fatbin and keeps ptxas's report in OUT_DIR/<name>.ptxas.txt.
/// nvcc's flags besides the targets. Also written to OUT_DIR/nvcc.txt (nvcc's path, then these),
/// so that tests can compile kernel variants exactly as the build does.
const NVCC_FLAGS: [&str; 7] = [
    "--fatbin",
    "-O3",
    "-std=c++17",
    "-Xptxas",
    "-v",
    "--expt-relaxed-constexpr",
    "-Ikernels",
];

fn compile(nvcc: &Path, source: &Path, out_dir: &Path) -> (String, PathBuf) {
    let name = source.file_stem().unwrap().to_string_lossy().into_owned();
    let fatbin = out_dir.join(format!("{name}.fatbin"));
    let mut recipe = vec![nvcc.display().to_string()];
    recipe.extend(NVCC_FLAGS.iter().map(|f| f.to_string()));
    fs::write(out_dir.join("nvcc.txt"), recipe.join("\n")).unwrap();
    let output = Command::new(nvcc)
        .args(NVCC_FLAGS)
        .args(gencode_flags())
        .arg("-o")
        .arg(&fatbin)
        .arg(source)
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", nvcc.display()));
    let report = String::from_utf8_lossy(&output.stderr);
    fs::write(out_dir.join(format!("{name}.ptxas.txt")), report.as_bytes()).unwrap();
    if !output.status.success() {
        panic!(
            "nvcc failed on {}:\n{}{}",
            source.display(),
            String::from_utf8_lossy(&output.stdout),
            report
        );
    }
    (name, fatbin)
}

/// Uses `<dir>/<name>.fatbin` for every kernel source.
fn prebuilt(dir: &Path, sources: &[PathBuf], out_dir: &Path) -> Vec<(String, PathBuf)> {
    println!("cargo::rerun-if-changed={}", dir.display());
    sources
        .iter()
        .map(|source| {
            let name = source.file_stem().unwrap().to_string_lossy().into_owned();
            let image = dir.join(format!("{name}.fatbin"));
            let copy = out_dir.join(format!("{name}.fatbin"));
            fs::copy(&image, &copy).unwrap_or_else(|e| {
                panic!(
                    "GRADMASK_PREBUILT_KERNELS: cannot read {}: {e}",
                    image.display()
                )
            });
            (name, copy)
        })
        .collect()
}

//! The stand-in driver (`vgpu/`) can run every instruction of the PTX that `build.rs` embedded:
//! a kernel change that needs an instruction the interpreter lacks fails here, naming it, instead
//! of failing later inside a CUDA test. Needs no GPU; skips (saying why) in a build without
//! kernels.

use gradmask::cuda::{module::kernel_image, KERNELS_BUILT};

/// The kernel files, `kernels/<name>.cu`.
fn kernel_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("kernels")
        .expect("run from the crate root")
        .filter_map(|e| {
            let path = e.unwrap().path();
            (path.extension()? == "cu")
                .then(|| path.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    names
}

#[test]
fn the_interpreter_runs_every_instruction_of_the_embedded_ptx() {
    if !KERNELS_BUILT {
        eprintln!("skipping: this build has no kernels (nvcc was not found)");
        return;
    }
    let mut failures = Vec::new();
    for name in kernel_names() {
        let image = kernel_image(&name).unwrap_or_else(|| panic!("{name}.cu is not embedded"));
        let texts = gradmask_vgpu::fatbin::ptx_texts(image).unwrap();
        assert!(!texts.is_empty(), "{name}: the fatbin has no PTX");
        for text in texts {
            match gradmask_vgpu::ptx::parse(&text) {
                Ok(module) => {
                    assert!(!module.kernels.is_empty(), "{name}: no kernels");
                    eprintln!(
                        "{name}.cu: {} kernels, {} distinct opcodes: {}",
                        module.kernels.len(),
                        module.opcodes.len(),
                        module.opcodes.iter().cloned().collect::<Vec<_>>().join(" ")
                    );
                }
                Err(e) => failures.push(format!("kernels/{name}.cu: {e}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "the interpreter lacks:\n{}",
        failures.join("\n")
    );
}

/// The check itself can fail: an instruction the interpreter refuses is named, with its line.
#[test]
fn an_unknown_instruction_is_named() {
    let ptx = ".version 9.0\n.target sm_90\n.address_size 64\n.visible .entry k()\n{\n\
               .reg .b32 %r<3>;\nmov.u32 %r1, 1;\nprmt.b32 %r2, %r1, %r1, 0x3210;\nret;\n}\n";
    let err = gradmask_vgpu::ptx::parse(ptx).unwrap_err();
    assert!(err.reason.contains("prmt.b32"), "{err}");
    assert_eq!(err.line, 8, "{err}");
}

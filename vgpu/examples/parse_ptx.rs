//! Parses PTX or fatbin files and prints each kernel's size (a developer's check of the front end).
fn main() {
    for path in std::env::args().skip(1) {
        let bytes = std::fs::read(&path).expect("read");
        let texts = if gradmask_vgpu::fatbin::is_fatbin(&bytes) {
            gradmask_vgpu::fatbin::ptx_texts(&bytes).expect("fatbin")
        } else {
            vec![String::from_utf8_lossy(&bytes).into_owned()]
        };
        for text in texts {
            match gradmask_vgpu::ptx::parse(&text) {
                Ok(m) => {
                    for k in &m.kernels {
                        println!(
                            "{path}: {} instrs={} regs={} (declared {}) shared={} params={}",
                            k.name,
                            k.instrs.len(),
                            k.n_regs,
                            k.declared_regs,
                            k.shared_bytes,
                            k.param_bytes
                        );
                    }
                    println!("{path}: {} opcodes", m.opcodes.len());
                }
                Err(e) => println!("{path}: ERROR {e}"),
            }
        }
    }
}

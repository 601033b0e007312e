//! CPU set-up: denormals flushed to zero on every thread, thread counts that do not oversubscribe
//! the cores, and an allocator that keeps freed buffers.
//!
//! Why:
//! - Tiny gradients and AdamW's second moments can decay into the denormal range, and x86 handles
//!   denormal operands in microcode (tens to hundreds of cycles per op).
//! - candle runs its element-wise ops on a "barrier pool" whose workers spin (25,000 iterations by
//!   default) between ops, while its matmuls (gemm) run on rayon. On 2 cores shared with anything
//!   else, the spinning workers take the cores from the threads doing the work: a step measured
//!   14x slower under load. So candle's pool gets one thread (`CANDLE_NUM_THREADS=1`: element-wise
//!   ops run on the calling thread, no spinning) and rayon gets the cores.
//!
//! Measured effects are in benches/NOTES.md, "finetune_llama (CPU)".

/// MXCSR bits: FTZ (flush results to zero, bit 15) and DAZ (treat denormal inputs as zero, bit 6).
#[cfg(target_arch = "x86_64")]
const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);

/// Sets FTZ and DAZ on the calling thread. Threads created afterwards inherit the setting (the
/// floating-point environment is copied at thread creation, C11 7.6p4), so calling this first thing
/// in `main` covers candle's and rayon's pools; the rayon pool also sets it in its start handler.
pub fn flush_denormals() {
    #[cfg(target_arch = "x86_64")]
    {
        let csr = read_mxcsr();
        write_mxcsr(csr | FTZ_DAZ);
    }
}

/// True when FTZ and DAZ are both set on the calling thread (always true off x86_64).
pub fn denormals_flushed() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        read_mxcsr() & FTZ_DAZ == FTZ_DAZ
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}

#[cfg(target_arch = "x86_64")]
fn read_mxcsr() -> u32 {
    let mut csr = 0u32;
    // SAFETY: `stmxcsr` stores the 32-bit MXCSR register into `csr`, a valid, writable u32.
    unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack)) };
    csr
}

#[cfg(target_arch = "x86_64")]
fn write_mxcsr(csr: u32) {
    // SAFETY: `ldmxcsr` loads a u32 we read from MXCSR with only the FTZ/DAZ bits added; both are
    // defined bits, so no reserved bit is set (which would fault).
    unsafe { std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack)) };
}

/// Keeps freed buffers in the heap. candle allocates a fresh output for every op; glibc serves
/// blocks above 128 KiB with mmap and returns them with munmap, so every op of a training step
/// page-faults its output in again. Raising the mmap and trim thresholds lets those blocks be
/// reused (measured: see benches/NOTES.md).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: mallopt only changes allocator tuning parameters; it is called before any other
        // thread exists, with documented parameter codes and values in range.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 1 << 30);
            mallopt(M_TRIM_THRESHOLD, i32::MAX);
        }
    }
}

/// Thread settings chosen for this process.
#[derive(Debug, Clone, Copy)]
pub struct Threads {
    /// rayon threads (gemm, the crate's selection).
    pub threads: usize,
    /// candle's element-wise barrier pool, the calling thread included.
    pub candle_threads: usize,
    /// Whether denormals are flushed.
    pub ftz: bool,
}

/// Configures the process before any candle or rayon work: FTZ/DAZ (unless `no_ftz`), the
/// allocator (unless `default_malloc`, see [`keep_freed_memory`]), and
/// `RAYON_NUM_THREADS` = `threads` (default: the available cores) and `CANDLE_NUM_THREADS` =
/// `candle_threads` (default 1), each unless the user already set it. Must run before any other
/// thread is spawned.
pub fn configure(
    threads: Option<usize>,
    candle_threads: Option<usize>,
    no_ftz: bool,
    default_malloc: bool,
) -> Threads {
    if !no_ftz {
        flush_denormals();
    }
    if !default_malloc {
        keep_freed_memory();
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = threads.unwrap_or(cores).max(1);
    let candle_threads = candle_threads.unwrap_or(1).max(1);
    for (var, n) in [
        ("RAYON_NUM_THREADS", threads),
        ("CANDLE_NUM_THREADS", candle_threads),
    ] {
        if std::env::var_os(var).is_none() {
            // No other thread exists yet (see the contract above), so nothing races on the environment.
            std::env::set_var(var, n.to_string());
        }
    }
    let from_env = |var: &str, n: usize| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(n)
    };
    let (threads, candle_threads) = (
        from_env("RAYON_NUM_THREADS", threads),
        from_env("CANDLE_NUM_THREADS", candle_threads),
    );
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .start_handler(move |_| {
            if !no_ftz {
                flush_denormals();
            }
        })
        .build_global();
    Threads {
        threads,
        candle_threads,
        ftz: denormals_flushed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ftz_is_inherited_by_new_threads() {
        let main_before = denormals_flushed();
        flush_denormals();
        assert!(denormals_flushed());
        assert!(std::thread::spawn(denormals_flushed).join().unwrap());
        // Flushing makes a denormal product zero.
        #[cfg(target_arch = "x86_64")]
        let tiny = std::hint::black_box(f32::MIN_POSITIVE);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(tiny * std::hint::black_box(0.5f32), 0.0);
        if !main_before {
            #[cfg(target_arch = "x86_64")]
            write_mxcsr(read_mxcsr() & !FTZ_DAZ); // leave the test thread as we found it
        }
    }
}

//! gradmask-vgpu: a stand-in CUDA driver that runs the PTX in gradmask's fatbins on the CPU, with
//! checks as strict as compute-sanitizer's, so the crate's CUDA tests run on machines without a GPU.
//!
//! Built as a cdylib and installed as `libcuda.so` / `libcuda.so.1` in a folder put first on
//! `LD_LIBRARY_PATH` (`scripts/vgpu.sh`); cudarc then loads it instead of NVIDIA's driver.
//!
//! - [`fatbin`]: the PTX inside an nvcc fatbin (zstd-compressed by nvcc 13);
//! - [`ptx`]: PTX text to decoded kernels (`parse`, `lower`, `ir`);
//! - [`exec`]: the interpreter: seeded block/warp scheduling, lane groups, barriers and
//!   warp-synchronous instructions, memory with memcheck/initcheck/racecheck/synccheck, traffic
//!   counters;
//! - [`driver`]: the `extern "C"` driver API over one simulated sm_90 device, with deferred
//!   stream work.
//! - [`nccl`]: a stand-in NCCL (communicators, all-reduce) for ranks as threads on that device,
//!   installed as `libnccl.so` by `scripts/vgpu.sh`.
//!
//! Environment: `GRADMASK_VGPU_SEED` (scheduling seed; 0 runs blocks in order, default 1),
//! `GRADMASK_VGPU_ITS=1` (run a random lane group of a diverged warp), `GRADMASK_VGPU_STREAMS=eager`
//! (run stream work at enqueue), `GRADMASK_VGPU_STICKY=0` (a fault is reported once, not forever),
//! `GRADMASK_VGPU_TRAFFIC=<file>` (append one JSON line of traffic counters per launch),
//! `GRADMASK_VGPU_QUIET` (no banner).

pub mod driver;
pub mod exec;
pub mod fatbin;
pub mod nccl;
pub mod ptx;

//! Running a kernel: the grid's blocks on a seeded scheduler, each block's warps, each warp's
//! divergent lane groups.
//!
//! - `memory`: device memory with its shadows; `shared`: a block's shared memory with its own.
//! - `warp`: blocks and warps (registers, lane groups by program counter, scheduling); `sync`:
//!   barriers, exits and warp-synchronous instructions; `step`: one instruction's semantics;
//!   `access`: loads, stores and atomics; `lanes`, `alu`: lane arithmetic.
//!
//! Scheduling: with seed 0, blocks run in order one at a time and each warp runs until it waits.
//! With any other seed, the block order is a random permutation, 1 to 4 blocks are resident and
//! interleaved, warps switch after random quanta, and (with `its`) a diverged warp often runs a
//! random one of its lane groups instead of the lowest program counter (Volta's independent thread
//! scheduling allows either).

mod access;
pub mod alu;
mod initbits;
mod lanes;
pub mod memory;
pub mod shared;
mod step;
mod sync;
mod warp;

use crate::ptx::ir::Kernel;
use memory::Memory;
use shared::Shared;
use warp::{Block, Yield};

/// What a launch needs besides the kernel and memory.
pub struct LaunchConfig<'a> {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dynamic_shared: u32,
    pub params: &'a [u8],
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// 0: in order; otherwise the seed of the adversarial scheduler.
    pub seed: u64,
    /// Run a random lane group of a diverged warp (not the lowest program counter).
    pub its: bool,
}

/// Global-memory traffic of one launch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// 32-byte sectors touched, counted per warp-instruction (as a GPU's memory pipeline would).
    pub sectors_read: u64,
    pub sectors_written: u64,
    /// Distinct 32-byte sectors the launch read and wrote: its footprint, the traffic a GPU whose
    /// caches serve every repeated access would move to and from DRAM.
    pub unique_sectors_read: u64,
    pub unique_sectors_written: u64,
    /// The same per allocation: (base address, sectors read, sectors written).
    pub per_allocation: Vec<(u64, u64, u64)>,
    /// Warp-instructions and thread-instructions executed.
    pub warp_instructions: u64,
    pub thread_instructions: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Out of bounds, unmapped, freed: CUDA_ERROR_ILLEGAL_ADDRESS.
    Memcheck,
    /// CUDA_ERROR_MISALIGNED_ADDRESS.
    Misaligned,
    Initcheck,
    Racecheck,
    Synccheck,
    /// Something the interpreter does not model (a partial barrier, say).
    Unsupported,
}

/// A check that stopped a launch, with where it happened.
#[derive(Clone, Debug)]
pub struct Fault {
    pub kind: FaultKind,
    pub message: String,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)
    }
}

/// SplitMix64: the scheduler's random numbers.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// State shared by every block of one launch.
pub struct Launch<'a> {
    pub kernel: &'a Kernel,
    pub mem: &'a mut Memory,
    pub params: &'a [u8],
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
    /// Fence count of every block (for the store tags).
    pub fences: Vec<u32>,
    pub traffic: Traffic,
    pub rng: Rng,
    pub opts: Options,
    /// The next barrier-interval id (racecheck epochs), unique across launches.
    pub epoch: &'a mut u32,
}

/// Runs every block of the grid. On a fault, the launch stops there (memory keeps what the
/// blocks had written, as on a GPU).
pub fn run(
    kernel: &Kernel,
    cfg: &LaunchConfig,
    mem: &mut Memory,
    opts: Options,
    launch_seq: u64,
    epoch: &mut u32,
) -> Result<Traffic, Fault> {
    let n_blocks = cfg.grid.iter().map(|&d| d as u64).product::<u64>() as usize;
    let mut launch = Launch {
        kernel,
        mem,
        params: cfg.params,
        grid: cfg.grid,
        block: cfg.block,
        shared_bytes: kernel.shared_bytes.next_multiple_of(16) + cfg.dynamic_shared,
        fences: vec![0; n_blocks],
        traffic: Traffic::default(),
        rng: Rng::new(opts.seed ^ launch_seq.wrapping_mul(0xD1B5_4A32_D192_ED03)),
        opts,
        epoch,
    };
    let result = schedule(&mut launch, n_blocks);
    let per_allocation = launch.mem.end_launch();
    launch.traffic.unique_sectors_read = per_allocation.iter().map(|a| a.1).sum();
    launch.traffic.unique_sectors_written = per_allocation.iter().map(|a| a.2).sum();
    launch.traffic.per_allocation = per_allocation;
    result.map(|()| launch.traffic)
}

fn schedule(launch: &mut Launch, n_blocks: usize) -> Result<(), Fault> {
    let adversarial = launch.opts.seed != 0;
    let mut order: Vec<u32> = (0..n_blocks as u32).collect();
    if adversarial {
        for i in (1..order.len()).rev() {
            let j = launch.rng.below(i + 1);
            order.swap(i, j);
        }
    }
    let resident_max = if adversarial {
        1 + launch.rng.below(4)
    } else {
        1
    };
    let mut next = 0usize;
    let mut resident: Vec<Block> = Vec::new();
    let mut spare_shared: Vec<Shared> = Vec::new();
    let mut spare_regs: Vec<Vec<u64>> = Vec::new();
    loop {
        while resident.len() < resident_max && next < order.len() {
            let shared = spare_shared
                .pop()
                .unwrap_or_else(|| Shared::new(launch.shared_bytes as usize));
            resident.push(Block::new(launch, order[next], shared, &mut spare_regs));
            next += 1;
        }
        if resident.is_empty() {
            return Ok(());
        }
        let b = if adversarial {
            launch.rng.below(resident.len())
        } else {
            0
        };
        let quantum = if adversarial {
            let span = if launch.rng.below(4) == 0 { 4 } else { 200 };
            1 + launch.rng.below(span) as u32
        } else {
            u32::MAX
        };
        match resident[b].run_some(launch, quantum)? {
            Yield::Running => {}
            Yield::Done => {
                let block = resident.swap_remove(b);
                let (shared, regs) = block.into_parts();
                spare_shared.push(shared);
                spare_regs.extend(regs);
            }
        }
    }
}

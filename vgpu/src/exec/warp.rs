//! Blocks and warps: lane groups, branches, exits, barriers and warp-synchronous instructions,
//! with the synccheck rules.
//!
//! A warp's runnable lanes are kept as groups of lanes at the same program counter, sorted by it.
//! The warp runs its lowest group (or a random one, with `its`), so lanes that branched apart
//! rejoin where their paths meet. A lane waiting at `bar.sync` or at a `shfl.sync`/`vote.sync`
//! whose member lanes have not all arrived leaves the groups until it is released.

use super::shared::Shared;
use super::step;
use super::sync;
use super::{Fault, FaultKind, Launch};
use crate::ptx::ir::Op;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Group {
    pub pc: u32,
    pub mask: u32,
}

pub struct Warp {
    pub index: u32,
    /// Register `r` of lane `l` is `regs[r * 32 + l]`.
    pub regs: Vec<u64>,
    pub groups: Vec<Group>,
    pub exists: u32,
    pub exited: u32,
    pub at_bar: u32,
    pub bar_pc: [u32; 32],
    pub at_sync: u32,
    pub sync_pc: [u32; 32],
    pub sync_mask: [u32; 32],
}

/// Adds lanes at `pc` to the sorted groups, merging with lanes already there.
pub fn add_group(groups: &mut Vec<Group>, pc: u32, mask: u32) {
    if mask == 0 {
        return;
    }
    match groups.binary_search_by_key(&pc, |g| g.pc) {
        Ok(i) => groups[i].mask |= mask,
        Err(i) => groups.insert(i, Group { pc, mask }),
    }
}

/// Block-level state the instructions read (ids) or change (barrier counts, epochs).
pub struct BlockCtx {
    pub linear: u32,
    pub ctaid: [u32; 3],
    pub n_threads: u32,
    pub exited: u32,
    pub at_bar: u32,
    /// The current barrier interval (racecheck epoch).
    pub epoch: u32,
}

pub struct Block {
    pub ctx: BlockCtx,
    pub warps: Vec<Warp>,
    pub shared: Shared,
    next_warp: usize,
}

pub enum Yield {
    Running,
    Done,
}

/// What a warp's run ended on.
enum Event {
    /// Ran its quantum, or has nothing runnable now.
    Paused,
    /// The last thread of the block arrived at the barrier.
    BarrierFull,
}

impl Block {
    pub fn new(
        launch: &mut Launch,
        linear: u32,
        mut shared: Shared,
        spare_regs: &mut Vec<Vec<u64>>,
    ) -> Block {
        let [gx, gy, _] = launch.grid;
        let ctaid = [linear % gx, (linear / gx) % gy, linear / (gx * gy)];
        let n_threads = launch.block.iter().product::<u32>();
        let n_regs = launch.kernel.n_regs;
        shared.reset(launch.shared_bytes as usize);
        *launch.epoch = launch.epoch.wrapping_add(1);
        let warps = (0..n_threads.div_ceil(32))
            .map(|w| {
                let lanes = (n_threads - w * 32).min(32);
                let exists = if lanes == 32 {
                    u32::MAX
                } else {
                    (1u32 << lanes) - 1
                };
                let mut regs = spare_regs.pop().unwrap_or_default();
                regs.resize(n_regs * 32, 0);
                Warp {
                    index: w,
                    regs,
                    groups: vec![Group {
                        pc: 0,
                        mask: exists,
                    }],
                    exists,
                    exited: 0,
                    at_bar: 0,
                    bar_pc: [0; 32],
                    at_sync: 0,
                    sync_pc: [0; 32],
                    sync_mask: [0; 32],
                }
            })
            .collect();
        Block {
            ctx: BlockCtx {
                linear,
                ctaid,
                n_threads,
                exited: 0,
                at_bar: 0,
                epoch: *launch.epoch,
            },
            warps,
            shared,
            next_warp: 0,
        }
    }

    pub fn into_parts(self) -> (Shared, Vec<Vec<u64>>) {
        (
            self.shared,
            self.warps.into_iter().map(|w| w.regs).collect(),
        )
    }

    /// Runs one warp for up to `quantum` instructions.
    pub fn run_some(&mut self, launch: &mut Launch, quantum: u32) -> Result<Yield, Fault> {
        let runnable: Vec<usize> = (0..self.warps.len())
            .filter(|&w| !self.warps[w].groups.is_empty())
            .collect();
        if runnable.is_empty() {
            if self.ctx.exited == self.ctx.n_threads {
                return Ok(Yield::Done);
            }
            return Err(self.deadlock(launch));
        }
        let w = if launch.opts.seed != 0 {
            runnable[launch.rng.below(runnable.len())]
        } else {
            let w = *runnable
                .iter()
                .find(|&&w| w >= self.next_warp)
                .unwrap_or(&runnable[0]);
            self.next_warp = w + 1;
            w
        };
        let event = run_warp(
            launch,
            &mut self.ctx,
            &mut self.shared,
            &mut self.warps[w],
            quantum,
        )?;
        if let Event::BarrierFull = event {
            for warp in &mut self.warps {
                let mut lanes = warp.at_bar;
                while lanes != 0 {
                    let l = lanes.trailing_zeros() as usize;
                    let pc = warp.bar_pc[l];
                    let same = (0..32)
                        .filter(|&k| warp.at_bar >> k & 1 == 1 && warp.bar_pc[k] == pc)
                        .fold(0u32, |m, k| m | 1 << k);
                    add_group(&mut warp.groups, pc + 1, same);
                    lanes &= !same;
                }
                warp.at_bar = 0;
            }
            self.ctx.at_bar = 0;
            *launch.epoch = launch.epoch.wrapping_add(1);
            self.ctx.epoch = *launch.epoch;
        }
        if self.ctx.exited == self.ctx.n_threads {
            return Ok(Yield::Done);
        }
        Ok(Yield::Running)
    }

    /// Nothing can run, yet threads are left: they wait for something that will not come.
    fn deadlock(&self, launch: &Launch) -> Fault {
        let mut waits = Vec::new();
        for warp in &self.warps {
            for l in 0..32 {
                let tid = warp.index * 32 + l;
                if warp.at_bar >> l & 1 == 1 {
                    waits.push(format!(
                        "thread {tid} at bar.sync (line {})",
                        line_of(launch, warp.bar_pc[l as usize])
                    ));
                } else if warp.at_sync >> l & 1 == 1 {
                    waits.push(format!(
                        "thread {tid} at `{}` (line {}) for lanes {:#010x}",
                        launch.kernel.text[warp.sync_pc[l as usize] as usize],
                        line_of(launch, warp.sync_pc[l as usize]),
                        warp.sync_mask[l as usize] & !warp.at_sync
                    ));
                }
            }
        }
        let shown = waits.iter().take(4).cloned().collect::<Vec<_>>().join("; ");
        Fault {
            kind: FaultKind::Synccheck,
            message: format!(
                "synccheck: kernel {} block {:?}: deadlock, {} thread(s) wait and none can run ({} exited): {shown}",
                launch.kernel.name,
                self.ctx.ctaid,
                waits.len(),
                self.ctx.exited
            ),
        }
    }
}

fn line_of(launch: &Launch, pc: u32) -> u32 {
    launch.kernel.instrs.get(pc as usize).map_or(0, |i| i.line)
}

/// The error message prefix naming where lane `lane` of `warp` is.
pub fn place(launch: &Launch, ctx: &BlockCtx, warp: &Warp, lane: u32, pc: usize) -> String {
    let tid = warp.index * 32 + lane;
    let [bx, by, _] = launch.block;
    let instr = &launch.kernel.instrs[pc];
    format!(
        "kernel {} block ({},{},{}) thread ({},{},{}) PTX line {} `{}` (seed {})",
        launch.kernel.name,
        ctx.ctaid[0],
        ctx.ctaid[1],
        ctx.ctaid[2],
        tid % bx,
        (tid / bx) % by,
        tid / (bx * by),
        instr.line,
        launch.kernel.text[pc],
        launch.opts.seed
    )
}

fn run_warp(
    launch: &mut Launch,
    ctx: &mut BlockCtx,
    shared: &mut Shared,
    warp: &mut Warp,
    quantum: u32,
) -> Result<Event, Fault> {
    let kernel = launch.kernel;
    let its = launch.opts.its && launch.opts.seed != 0;
    for _ in 0..quantum {
        if warp.groups.is_empty() {
            return Ok(Event::Paused);
        }
        // With `its`, one pick in four is a random lane group; the others take the lowest, so
        // that lanes still meet again and run together most of the time.
        let gi = if its && warp.groups.len() > 1 && launch.rng.below(4) == 0 {
            launch.rng.below(warp.groups.len())
        } else {
            0
        };
        let Group { pc, mask } = warp.groups[gi];
        let pcu = pc as usize;
        let Some(instr) = kernel.instrs.get(pcu) else {
            // Falling off the end of the body is an implicit exit.
            warp.groups.remove(gi);
            sync::exit_lanes(launch, ctx, warp, mask, pcu.saturating_sub(1))?;
            continue;
        };
        let active = match instr.guard {
            None => mask,
            Some((p, neg)) => {
                let row = &warp.regs[p as usize * 32..p as usize * 32 + 32];
                let mut on = 0u32;
                for (l, v) in row.iter().enumerate() {
                    on |= ((v & 1) as u32) << l;
                }
                if neg {
                    mask & !on
                } else {
                    mask & on
                }
            }
        };
        launch.traffic.warp_instructions += 1;
        launch.traffic.thread_instructions += active.count_ones() as u64;
        match &instr.op {
            Op::Bra { target } => {
                warp.groups.remove(gi);
                add_group(&mut warp.groups, *target, active);
                add_group(&mut warp.groups, pc + 1, mask & !active);
            }
            Op::Exit => {
                warp.groups.remove(gi);
                add_group(&mut warp.groups, pc + 1, mask & !active);
                sync::exit_lanes(launch, ctx, warp, active, pcu)?;
            }
            Op::Bar { id, count } => {
                warp.groups.remove(gi);
                add_group(&mut warp.groups, pc + 1, mask & !active);
                if sync::arrive_at_barrier(launch, ctx, warp, pcu, active, *id, *count)? {
                    return Ok(Event::BarrierFull);
                }
            }
            Op::Shfl { mask: member, .. } | Op::Vote { mask: member, .. } => {
                sync::warp_sync(launch, ctx, shared, warp, gi, pcu, mask, active, *member)?;
            }
            _ => {
                if active != 0 {
                    step::exec(launch, ctx, shared, warp, pcu, active, mask)?;
                }
                let g = &mut warp.groups[gi];
                g.pc += 1;
                if gi + 1 < warp.groups.len() && warp.groups[gi + 1].pc == pc + 1 {
                    let merged = warp.groups.remove(gi + 1).mask;
                    warp.groups[gi].mask |= merged;
                }
            }
        }
    }
    Ok(Event::Paused)
}

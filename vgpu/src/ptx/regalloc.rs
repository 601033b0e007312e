//! Packs a kernel's virtual registers into as few slots as their lifetimes allow.
//!
//! nvcc emits one virtual register per value: thousands per kernel (5,020 in `gm_refine_bf16`).
//! The interpreter stores every register for all 32 lanes, so a warp's file would be over a
//! megabyte and every instruction would miss the cache. Here liveness is computed over the
//! control-flow graph (backward dataflow on basic blocks), each register gets the interval of
//! instruction indices where it is live (loops included, since liveness marks the whole loop),
//! and intervals are packed greedily into slots. Two registers share a slot only when one
//! interval ends strictly before the other begins, so an instruction never writes a slot that
//! one of its own operands still reads. A guarded definition does not end a lifetime (the write
//! may not happen).

use super::ir::{Instr, Op, Reg, Src};

/// Whether a register is read or written by an instruction.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Use,
    Def,
}

fn src(s: &mut Src, f: &mut impl FnMut(&mut Reg, Role)) {
    if let Src::Reg(r) = s {
        f(r, Role::Use)
    }
}

/// Calls `f` on every register of `op`, uses before definitions.
pub fn visit(op: &mut Op, f: &mut impl FnMut(&mut Reg, Role)) {
    use Role::Def;
    match op {
        Op::Mov { dst, src: s, .. } => {
            src(s, f);
            f(dst, Def);
        }
        Op::Special { dst, .. } | Op::Activemask { dst } => f(dst, Def),
        Op::Pack { dst, parts, .. } => {
            parts.iter_mut().for_each(|p| src(p, f));
            f(dst, Def);
        }
        Op::Unpack { dsts, src: s, .. } => {
            src(s, f);
            dsts.iter_mut().flatten().for_each(|d| f(d, Def));
        }
        Op::Int { dst, a, b, .. } | Op::MulWide { dst, a, b, .. } | Op::Float { dst, a, b, .. } => {
            src(a, f);
            src(b, f);
            f(dst, Def);
        }
        Op::Mad { dst, a, b, c, .. } | Op::Fma { dst, a, b, c, .. } => {
            src(a, f);
            src(b, f);
            src(c, f);
            f(dst, Def);
        }
        Op::Unary { dst, a, .. } | Op::Cvt { dst, src: a, .. } | Op::Cvta { dst, src: a, .. } => {
            src(a, f);
            f(dst, Def);
        }
        Op::Setp {
            dst,
            dst_not,
            a,
            b,
            combine,
            ..
        } => {
            src(a, f);
            src(b, f);
            if let Some((_, c)) = combine {
                src(&mut c.src, f);
            }
            f(dst, Def);
            if let Some(n) = dst_not {
                f(n, Def);
            }
        }
        Op::Selp {
            dst, a, b, pred, ..
        } => {
            src(a, f);
            src(b, f);
            src(&mut pred.src, f);
            f(dst, Def);
        }
        Op::Pred { dst, a, b, .. } => {
            src(&mut a.src, f);
            src(&mut b.src, f);
            f(dst, Def);
        }
        Op::Ld { dsts, addr, .. } => {
            if let Some(r) = &mut addr.base {
                f(r, Role::Use);
            }
            dsts.iter_mut().flatten().for_each(|d| f(d, Def));
        }
        Op::St { srcs, addr, .. } => {
            if let Some(r) = &mut addr.base {
                f(r, Role::Use);
            }
            srcs.iter_mut().for_each(|s| src(s, f));
        }
        Op::Atom {
            dst, addr, b, c, ..
        } => {
            if let Some(r) = &mut addr.base {
                f(r, Role::Use);
            }
            src(b, f);
            if let Some(c) = c {
                src(c, f);
            }
            if let Some(d) = dst {
                f(d, Def);
            }
        }
        Op::Bar { id, count } => {
            src(id, f);
            if let Some(c) = count {
                src(c, f);
            }
        }
        Op::Shfl {
            dst,
            dst_pred,
            a,
            b,
            c,
            mask,
            ..
        } => {
            for s in [a, b, c, mask] {
                src(s, f);
            }
            f(dst, Def);
            if let Some(p) = dst_pred {
                f(p, Def);
            }
        }
        Op::Vote {
            dst, pred, mask, ..
        } => {
            src(&mut pred.src, f);
            src(mask, f);
            if *dst != u32::MAX {
                f(dst, Def);
            }
        }
        Op::Fence | Op::FenceCta | Op::Bra { .. } | Op::Exit => {}
    }
}

/// Every register of `instr`, the guard included, with its role.
fn each(instr: &mut Instr, f: &mut impl FnMut(&mut Reg, Role)) {
    if let Some((p, _)) = &mut instr.guard {
        f(p, Role::Use);
    }
    visit(&mut instr.op, f);
}

struct Bits(Vec<u64>);

impl Bits {
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
    fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &bits)| {
            (0..64)
                .filter(move |b| bits >> b & 1 == 1)
                .map(move |b| w * 64 + b)
        })
    }
}

/// Rewrites the registers of `instrs` into packed slots; returns the number of slots.
pub fn compact(instrs: &mut [Instr], n_regs: usize) -> usize {
    let n = instrs.len();
    if n == 0 || n_regs == 0 {
        return n_regs;
    }
    // Basic blocks: leaders at 0, at branch targets and after branches and exits.
    let mut leader = vec![false; n + 1];
    leader[0] = true;
    for (i, ins) in instrs.iter().enumerate() {
        match ins.op {
            Op::Bra { target } => {
                leader[target as usize] = true;
                leader[i + 1] = true;
            }
            Op::Exit => leader[i + 1] = true,
            _ => {}
        }
    }
    let starts: Vec<usize> = (0..n).filter(|&i| leader[i]).collect();
    let block_of = {
        let mut b = vec![0usize; n];
        for (k, &s) in starts.iter().enumerate() {
            let end = starts.get(k + 1).copied().unwrap_or(n);
            b[s..end].fill(k);
        }
        b
    };
    let ends: Vec<usize> = (0..starts.len())
        .map(|k| starts.get(k + 1).copied().unwrap_or(n))
        .collect();
    let succs: Vec<Vec<usize>> = (0..starts.len())
        .map(|k| {
            let last = &instrs[ends[k] - 1];
            let unconditional = last.guard.is_none();
            let mut s = Vec::new();
            match last.op {
                Op::Bra { target } => {
                    // A label after the last instruction is the end of the kernel: no successor.
                    if (target as usize) < n {
                        s.push(block_of[target as usize]);
                    }
                    if !unconditional && ends[k] < n {
                        s.push(k + 1);
                    }
                }
                Op::Exit if unconditional => {}
                _ if ends[k] < n => s.push(k + 1),
                _ => {}
            }
            s
        })
        .collect();
    // Per block: registers used before any unguarded definition, and unguarded definitions.
    let words = n_regs.div_ceil(64);
    let mut gen = vec![vec![0u64; words]; starts.len()];
    let mut kill = vec![vec![0u64; words]; starts.len()];
    for k in 0..starts.len() {
        for i in (starts[k]..ends[k]).rev() {
            let guarded = instrs[i].guard.is_some();
            let mut defs = Vec::new();
            let mut uses = Vec::new();
            each(&mut instrs[i], &mut |r, role| match role {
                Role::Def => defs.push(*r as usize),
                Role::Use => uses.push(*r as usize),
            });
            for d in defs {
                if !guarded {
                    kill[k][d / 64] |= 1 << (d % 64);
                    gen[k][d / 64] &= !(1 << (d % 64));
                }
            }
            for u in uses {
                gen[k][u / 64] |= 1 << (u % 64);
            }
        }
    }
    let mut live_out = vec![vec![0u64; words]; starts.len()];
    let mut live_in = gen.clone();
    let mut changed = true;
    while changed {
        changed = false;
        for k in (0..starts.len()).rev() {
            let mut out = vec![0u64; words];
            for &s in &succs[k] {
                for w in 0..words {
                    out[w] |= live_in[s][w];
                }
            }
            let inn: Vec<u64> = (0..words)
                .map(|w| gen[k][w] | (out[w] & !kill[k][w]))
                .collect();
            if inn != live_in[k] {
                live_in[k] = inn;
                changed = true;
            }
            live_out[k] = out;
        }
    }
    // Intervals: every instruction index where a register is live, or defined.
    let mut lo = vec![usize::MAX; n_regs];
    let mut hi = vec![0usize; n_regs];
    let mut touch = |r: usize, i: usize| {
        lo[r] = lo[r].min(i);
        hi[r] = hi[r].max(i);
    };
    for k in 0..starts.len() {
        let mut live = Bits(live_out[k].clone());
        for r in live.ones() {
            touch(r, ends[k] - 1);
        }
        for i in (starts[k]..ends[k]).rev() {
            let guarded = instrs[i].guard.is_some();
            let mut defs = Vec::new();
            let mut uses = Vec::new();
            each(&mut instrs[i], &mut |r, role| match role {
                Role::Def => defs.push(*r as usize),
                Role::Use => uses.push(*r as usize),
            });
            for &d in &defs {
                touch(d, i);
                if !guarded {
                    live.clear(d);
                }
            }
            for &u in &uses {
                live.set(u);
            }
            for r in live.ones() {
                touch(r, i);
            }
        }
    }
    // Registers live on entry (read before any write) keep their lifetime from 0.
    for r in Bits(live_in[0].clone()).ones() {
        lo[r] = 0;
    }
    // Greedy packing in order of start: a slot is free once its interval ended before.
    let mut order: Vec<usize> = (0..n_regs).filter(|&r| lo[r] != usize::MAX).collect();
    order.sort_by_key(|&r| (lo[r], hi[r]));
    let mut slot_of = vec![u32::MAX; n_regs];
    let mut slot_end: Vec<usize> = Vec::new();
    let mut free: std::collections::BinaryHeap<std::cmp::Reverse<(usize, u32)>> =
        Default::default();
    for r in order {
        // Slots whose interval ended strictly before this start, lowest first.
        let slot = match free.peek() {
            Some(&std::cmp::Reverse((end, slot))) if end < lo[r] => {
                free.pop();
                slot
            }
            _ => {
                slot_end.push(0);
                (slot_end.len() - 1) as u32
            }
        };
        slot_end[slot as usize] = hi[r];
        free.push(std::cmp::Reverse((hi[r], slot)));
        slot_of[r] = slot;
    }
    let slots = slot_end.len().max(1);
    for ins in instrs.iter_mut() {
        each(ins, &mut |r, _| {
            // A register never live anywhere (unused) keeps slot 0; it is never read.
            *r = if slot_of[*r as usize] == u32::MAX {
                0
            } else {
                slot_of[*r as usize]
            };
        });
    }
    slots
}

//! Synchronisation within a block: `bar.sync`, exits, and the warp-synchronous instructions
//! (`shfl.sync`, `vote.sync`, `bar.warp.sync`), with the synccheck rules: a barrier reached while
//! threads have exited, a thread exiting while others wait, a member mask naming lanes that never
//! arrive or that excluded the lane itself.

use super::shared::Shared;
use super::step;
use super::warp::{add_group, place, BlockCtx, Warp};
use super::{Fault, FaultKind, Launch};
use crate::ptx::ir::Src;

/// `bar.sync` reached by the lanes `active` of `warp` at `pc`: they wait. Returns whether every
/// thread of the block has now arrived (the caller releases them).
pub(super) fn arrive_at_barrier(
    launch: &Launch,
    ctx: &mut BlockCtx,
    warp: &mut Warp,
    pcu: usize,
    active: u32,
    id: Src,
    count: Option<Src>,
) -> Result<bool, Fault> {
    let pc = pcu as u32;
    if active == 0 {
        return Ok(false);
    }
    let lane = active.trailing_zeros();
    let bar_id = match &id {
        Src::Imm(v) => *v,
        Src::Reg(r) => warp.regs[*r as usize * 32 + lane as usize],
    };
    let full = match &count {
        None => true,
        Some(Src::Imm(v)) => *v == ctx.n_threads as u64,
        Some(Src::Reg(r)) => warp.regs[*r as usize * 32 + lane as usize] == ctx.n_threads as u64,
    };
    if bar_id != 0 || !full {
        return Err(Fault {
            kind: FaultKind::Unsupported,
            message: format!(
                "unsupported: {}: only barrier 0 over the whole block is modelled",
                place(launch, ctx, warp, lane, pcu)
            ),
        });
    }
    if ctx.exited > 0 {
        return Err(sync_fault(
            launch,
            ctx,
            warp,
            lane,
            pcu,
            format!(
                "bar.sync reached while {} thread(s) of the block have exited",
                ctx.exited
            ),
        ));
    }
    warp.at_bar |= active;
    let mut m = active;
    while m != 0 {
        warp.bar_pc[m.trailing_zeros() as usize] = pc;
        m &= m - 1;
    }
    ctx.at_bar += active.count_ones();
    Ok(ctx.at_bar == ctx.n_threads)
}

fn sync_fault(
    launch: &Launch,
    ctx: &BlockCtx,
    warp: &Warp,
    lane: u32,
    pc: usize,
    what: String,
) -> Fault {
    Fault {
        kind: FaultKind::Synccheck,
        message: format!("synccheck: {}: {what}", place(launch, ctx, warp, lane, pc)),
    }
}

pub(super) fn exit_lanes(
    launch: &Launch,
    ctx: &mut BlockCtx,
    warp: &mut Warp,
    lanes: u32,
    pc: usize,
) -> Result<(), Fault> {
    if lanes == 0 {
        return Ok(());
    }
    warp.exited |= lanes;
    ctx.exited += lanes.count_ones();
    if ctx.at_bar > 0 {
        return Err(sync_fault(
            launch,
            ctx,
            warp,
            lanes.trailing_zeros(),
            pc,
            format!(
                "thread exits while {} thread(s) of the block wait at a barrier",
                ctx.at_bar
            ),
        ));
    }
    Ok(())
}

/// `shfl.sync` / `vote.sync` / `bar.warp.sync`: each lane waits for the lanes of its own member
/// mask. Lanes giving the same mask run together once every lane of that mask has arrived at this
/// instruction; until then the arrived lanes wait. Disjoint masks (two half-warps, say) run
/// separately.
#[allow(clippy::too_many_arguments)]
pub(super) fn warp_sync(
    launch: &mut Launch,
    ctx: &mut BlockCtx,
    shared: &mut Shared,
    warp: &mut Warp,
    gi: usize,
    pc: usize,
    mask: u32,
    active: u32,
    member: Src,
) -> Result<(), Fault> {
    warp.groups.remove(gi);
    add_group(&mut warp.groups, pc as u32 + 1, mask & !active);
    let member_of = |warp: &Warp, l: u32| match member {
        Src::Imm(v) => v as u32,
        Src::Reg(r) => warp.regs[r as usize * 32 + l as usize] as u32,
    };
    let mut rest = active;
    while rest != 0 {
        let m = member_of(warp, rest.trailing_zeros());
        let mut same = 0u32;
        let mut lanes = rest;
        while lanes != 0 {
            let l = lanes.trailing_zeros();
            if member_of(warp, l) == m {
                same |= 1 << l;
            }
            lanes &= lanes - 1;
        }
        rest &= !same;
        sync_group(launch, ctx, shared, warp, pc, m, same)?;
    }
    Ok(())
}

/// The lanes `arriving` (all giving member mask `m`) at warp-synchronous instruction `pc`.
fn sync_group(
    launch: &mut Launch,
    ctx: &mut BlockCtx,
    shared: &mut Shared,
    warp: &mut Warp,
    pc: usize,
    m: u32,
    arriving: u32,
) -> Result<(), Fault> {
    let pc32 = pc as u32;
    let first = arriving.trailing_zeros();
    if arriving & !m != 0 {
        let l = (arriving & !m).trailing_zeros();
        let what = format!("lane {l} executes with member mask {m:#010x}, which excludes it");
        return Err(sync_fault(launch, ctx, warp, l, pc, what));
    }
    let gone = m & (!warp.exists | warp.exited);
    if gone != 0 {
        let what = format!(
            "member mask {m:#010x} names lane(s) {gone:#010x} that have exited or do not exist"
        );
        return Err(sync_fault(launch, ctx, warp, first, pc, what));
    }
    // Lanes already waiting here with the same mask join this execution.
    let mut waiting = 0u32;
    let mut w = warp.at_sync;
    while w != 0 {
        let l = w.trailing_zeros() as usize;
        if warp.sync_pc[l] == pc32 && warp.sync_mask[l] == m {
            waiting |= 1 << l;
        }
        w &= w - 1;
    }
    let arrived = arriving | waiting;
    if m & !arrived != 0 {
        warp.at_sync |= arriving;
        let mut a = arriving;
        while a != 0 {
            let l = a.trailing_zeros() as usize;
            warp.sync_pc[l] = pc32;
            warp.sync_mask[l] = m;
            a &= a - 1;
        }
        return Ok(());
    }
    warp.at_sync &= !arrived;
    step::exec(launch, ctx, shared, warp, pc, arrived, arrived)?;
    add_group(&mut warp.groups, pc32 + 1, arrived);
    Ok(())
}

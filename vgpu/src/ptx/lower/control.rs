//! Moves, control flow, barriers, fences and warp-synchronous instructions.

use super::operands::{special, unsupported, Opcode, Ops};
use super::{Lowered, RawOperand};
use crate::ptx::ir::*;

/// `mov`: copies, packs and unpacks, special registers, symbol addresses.
pub(super) fn mov(oc: &Opcode, o: &Ops, opcode: &str) -> Result<Lowered, String> {
    let raw = o.raw;
    oc.only(&[])?;
    let ty = oc.ty()?;
    o.count(2)?;
    Ok(Lowered::Op(match (&raw[0], &raw[1]) {
        (RawOperand::Vec(_), _) => {
            let dsts = o.dsts(0)?;
            let part_bits = ty.bits() / dsts.len() as u32;
            Op::Unpack {
                dsts,
                src: o.src(1, ty)?,
                part_bits,
            }
        }
        (_, RawOperand::Vec(v)) => {
            let part_bits = ty.bits() / v.len() as u32;
            let part_ty = match part_bits {
                8 => Ty::B8,
                16 => Ty::B16,
                32 => Ty::B32,
                _ => return Err(unsupported(opcode)),
            };
            Op::Pack {
                dst: o.dst(0)?,
                parts: o.srcs(1, part_ty)?,
                part_bits,
            }
        }
        (_, RawOperand::Name(n)) if n.starts_with('%') && special(n).is_some() => Op::Special {
            dst: o.dst(0)?,
            sp: special(n).unwrap(),
        },
        _ => Op::Mov {
            ty,
            dst: o.dst(0)?,
            src: o.src(1, ty)?,
        },
    }))
}

/// `membar.{cta,gl,sys}` and `fence.{sc,acq_rel}.{cta,gpu,sys}`.
pub(super) fn fence(oc: &Opcode, _o: &Ops, _opcode: &str) -> Result<Lowered, String> {
    oc.only(&["gl", "sys", "cta", "gpu", "sc", "acq_rel"])?;
    Ok(Lowered::Op(if oc.has("cta") {
        Op::FenceCta
    } else {
        Op::Fence
    }))
}

/// `bar.sync` / `barrier.sync` (block) and `bar.warp.sync` (warp).
pub(super) fn bar(oc: &Opcode, o: &Ops, opcode: &str) -> Result<Lowered, String> {
    let raw = o.raw;
    if oc.has("warp") {
        oc.only(&["warp", "sync"])?;
        o.count(1)?;
        // bar.warp.sync: a vote whose result is dropped.
        return Ok(Lowered::Op(Op::Vote {
            mode: VoteMode::Uni,
            dst: u32::MAX,
            pred: PredSrc {
                src: Src::Imm(1),
                neg: false,
            },
            mask: o.src(0, Ty::B32)?,
        }));
    }
    oc.only(&["sync", "cta", "aligned"])?;
    if !oc.has("sync") {
        return Err(unsupported(opcode));
    }
    Ok(Lowered::Op(Op::Bar {
        id: o.src(0, Ty::U32)?,
        count: if raw.len() > 1 {
            Some(o.src(1, Ty::U32)?)
        } else {
            None
        },
    }))
}

/// `shfl.sync.mode.b32 d[|p], a, b, c, membermask`.
pub(super) fn shfl(oc: &Opcode, o: &Ops, opcode: &str) -> Result<Lowered, String> {
    let raw = o.raw;
    oc.only(&["sync", "up", "down", "bfly", "idx"])?;
    if !oc.has("sync") {
        return Err(unsupported(opcode));
    }
    o.count(5)?;
    let mode = if oc.has("up") {
        ShflMode::Up
    } else if oc.has("down") {
        ShflMode::Down
    } else if oc.has("bfly") {
        ShflMode::Bfly
    } else {
        ShflMode::Idx
    };
    let (dst, dst_pred) = match &raw[0] {
        RawOperand::Pair(a, b) => (o.reg_of(a)?, Some(o.reg_of(b)?)),
        _ => (o.dst(0)?, None),
    };
    Ok(Lowered::Op(Op::Shfl {
        mode,
        dst,
        dst_pred,
        a: o.src(1, Ty::B32)?,
        b: o.src(2, Ty::B32)?,
        c: o.src(3, Ty::B32)?,
        mask: o.src(4, Ty::B32)?,
    }))
}

/// `vote.sync.mode d, {!}a, membermask`.
pub(super) fn vote(oc: &Opcode, o: &Ops, opcode: &str) -> Result<Lowered, String> {
    oc.only(&["sync", "ballot", "all", "any", "uni"])?;
    if !oc.has("sync") {
        return Err(unsupported(opcode));
    }
    o.count(3)?;
    let mode = if oc.has("ballot") {
        VoteMode::Ballot
    } else if oc.has("all") {
        VoteMode::All
    } else if oc.has("any") {
        VoteMode::Any
    } else {
        VoteMode::Uni
    };
    Ok(Lowered::Op(Op::Vote {
        mode,
        dst: o.dst(0)?,
        pred: o.pred(1)?,
        mask: o.src(2, Ty::B32)?,
    }))
}

/// `activemask.b32 d`.
pub(super) fn activemask(_oc: &Opcode, o: &Ops, _opcode: &str) -> Result<Lowered, String> {
    o.count(1)?;
    Ok(Lowered::Op(Op::Activemask { dst: o.dst(0)? }))
}

/// `bra[.uni] label`.
pub(super) fn bra(oc: &Opcode, o: &Ops, _opcode: &str) -> Result<Lowered, String> {
    let raw = o.raw;
    oc.only(&["uni"])?;
    o.count(1)?;
    match &raw[0] {
        RawOperand::Name(label) => Ok(Lowered::Branch(label.clone())),
        _ => Err("branch target is not a label".into()),
    }
}

/// `ret` and `exit`.
pub(super) fn exit(oc: &Opcode, _o: &Ops, _opcode: &str) -> Result<Lowered, String> {
    oc.only(&[])?;
    Ok(Lowered::Op(Op::Exit))
}

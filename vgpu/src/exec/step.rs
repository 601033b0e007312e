//! One instruction over the active lanes of a warp: arithmetic, conversions, special registers,
//! shuffles and votes. Memory instructions are in `access.rs`.

use super::access;
use super::alu;
use super::lanes::{self, apply1, apply2, apply3, lanes};
use super::shared::Shared;
use super::warp::{place, BlockCtx, Warp};
use super::{Fault, FaultKind, Launch};
use crate::ptx::ir::{BoolOp, Op, PredSrc, ShflMode, Special, Src, VoteMode};

#[inline(always)]
pub fn get(regs: &[u64], s: Src, l: usize) -> u64 {
    match s {
        Src::Reg(r) => regs[r as usize * 32 + l],
        Src::Imm(v) => v,
    }
}

#[inline(always)]
fn pred(regs: &[u64], p: PredSrc, l: usize) -> bool {
    (get(regs, p.src, l) & 1 == 1) != p.neg
}

fn boolop(op: BoolOp, a: bool, b: bool) -> bool {
    match op {
        BoolOp::And => a && b,
        BoolOp::Or => a || b,
        BoolOp::Xor => a != b,
    }
}

/// A unary/binary/ternary register-to-register operation over the active lanes.
macro_rules! map_lanes {
    ($regs:ident, $active:expr, $dst:expr, |$l:ident| $body:expr) => {{
        let d = *$dst as usize * 32;
        lanes($active, |$l| {
            let v = $body;
            $regs[d + $l] = v;
        });
    }};
}

pub fn exec(
    launch: &mut Launch,
    ctx: &mut BlockCtx,
    shared: &mut Shared,
    warp: &mut Warp,
    pc: usize,
    active: u32,
    group: u32,
) -> Result<(), Fault> {
    let instr = &launch.kernel.instrs[pc];
    let regs = &mut warp.regs;
    match &instr.op {
        Op::Mov { ty, dst, src } => {
            let mask = ty.mask();
            apply1(regs, active, *dst, *src, |x| x & mask);
        }
        Op::Special { dst, sp } => {
            let [bx, by, bz] = launch.block;
            let [gx, gy, gz] = launch.grid;
            let base = warp.index * 32;
            let n_warps = ctx.n_threads.div_ceil(32);
            map_lanes!(regs, active, dst, |l| {
                let tid = base + l as u32;
                let lane = l as u32;
                let dim = |v: [u32; 3], d: u8| v[d as usize] as u64;
                match sp {
                    Special::Tid(d) => dim([tid % bx, (tid / bx) % by, tid / (bx * by)], *d),
                    Special::Ntid(d) => dim([bx, by, bz], *d),
                    Special::Ctaid(d) => dim(ctx.ctaid, *d),
                    Special::Nctaid(d) => dim([gx, gy, gz], *d),
                    Special::LaneId => lane as u64,
                    Special::WarpId => warp.index as u64,
                    Special::NWarpId => n_warps as u64,
                    Special::LanemaskLt => ((1u64 << lane) - 1) & 0xffff_ffff,
                    Special::LanemaskLe => ((1u64 << (lane + 1)) - 1) & 0xffff_ffff,
                    Special::LanemaskGt => !((1u64 << (lane + 1)) - 1) & 0xffff_ffff,
                    Special::LanemaskGe => !((1u64 << lane) - 1) & 0xffff_ffff,
                    Special::LanemaskEq => 1u64 << lane,
                    Special::Clock | Special::Clock64 => launch.traffic.warp_instructions,
                    Special::SmId => 0,
                }
            })
        }
        Op::Pack {
            dst,
            parts,
            part_bits,
        } => {
            let pm = (1u64 << part_bits) - 1;
            map_lanes!(regs, active, dst, |l| parts
                .iter()
                .enumerate()
                .fold(0u64, |acc, (i, p)| acc
                    | (get(regs, *p, l) & pm) << (i as u32 * part_bits)))
        }
        Op::Unpack {
            dsts,
            src,
            part_bits,
        } => {
            let pm = (1u64 << part_bits) - 1;
            lanes(active, |l| {
                let v = get(regs, *src, l);
                for (i, d) in dsts.iter().enumerate() {
                    if let Some(d) = d {
                        regs[*d as usize * 32 + l] = (v >> (i as u32 * part_bits)) & pm;
                    }
                }
            })
        }
        Op::Int { op, ty, dst, a, b } => lanes::int_op(regs, active, *op, *ty, *dst, *a, *b),
        Op::MulWide { ty, dst, a, b } => {
            apply2(regs, active, *dst, *a, *b, |x, y| alu::mul_wide(*ty, x, y));
        }
        Op::Mad {
            ty,
            hi,
            wide,
            dst,
            a,
            b,
            c,
        } => {
            let bits = ty.bits();
            map_lanes!(regs, active, dst, |l| {
                let (x, y, z) = (get(regs, *a, l), get(regs, *b, l), get(regs, *c, l));
                if *wide {
                    let m = if bits == 32 {
                        u64::MAX
                    } else {
                        (1u64 << (2 * bits)) - 1
                    };
                    alu::mul_wide(*ty, x, y).wrapping_add(z) & m
                } else if *hi {
                    alu::int(crate::ptx::ir::IntOp::MulHi, *ty, x, y).wrapping_add(z) & ty.mask()
                } else {
                    x.wrapping_mul(y).wrapping_add(z) & ty.mask()
                }
            })
        }
        Op::Unary { op, ty, dst, a } => {
            apply1(regs, active, *dst, *a, |x| alu::unary(*op, *ty, x));
        }
        Op::Float { op, ty, dst, a, b } => {
            apply2(regs, active, *dst, *a, *b, |x, y| {
                alu::float(*op, *ty, x, y)
            });
        }
        Op::Fma { ty, dst, a, b, c } => {
            apply3(regs, active, *dst, *a, *b, *c, |x, y, z| {
                alu::fma(*ty, x, y, z)
            });
        }
        Op::Setp {
            cmp,
            ty,
            dst,
            dst_not,
            a,
            b,
            combine,
        } => {
            lanes::compare(regs, active, *cmp, *ty, *dst, *a, *b);
            if combine.is_some() || dst_not.is_some() {
                lanes(active, |l| {
                    let r = regs[*dst as usize * 32 + l] == 1;
                    let (p, q) = match combine {
                        Some((op, c)) => {
                            let c = pred(regs, *c, l);
                            (boolop(*op, r, c), boolop(*op, !r, c))
                        }
                        None => (r, !r),
                    };
                    regs[*dst as usize * 32 + l] = p as u64;
                    if let Some(n) = dst_not {
                        regs[*n as usize * 32 + l] = q as u64;
                    }
                });
            }
        }
        Op::Selp {
            ty,
            dst,
            a,
            b,
            pred: p,
        } => {
            let (mask, neg) = (ty.mask(), p.neg as u64);
            apply3(regs, active, *dst, *a, *b, p.src, |x, y, c| {
                let picked = if (c & 1) ^ neg == 1 { x } else { y };
                picked & mask
            });
        }
        Op::Pred { op, dst, a, b } => {
            map_lanes!(regs, active, dst, |l| {
                let x = pred(regs, *a, l);
                (match op {
                    None => !x,
                    Some(o) => boolop(*o, x, pred(regs, *b, l)),
                }) as u64
            })
        }
        Op::Cvt {
            dst_ty,
            src_ty,
            rnd,
            integral,
            sat,
            dst,
            src,
        } => {
            apply1(regs, active, *dst, *src, |x| {
                alu::cvt(*dst_ty, *src_ty, *rnd, *integral, *sat, x)
            });
        }
        Op::Cvta {
            space,
            to,
            dst,
            src,
        } => {
            let window = access::generic_base(*space);
            map_lanes!(regs, active, dst, |l| {
                let v = get(regs, *src, l);
                if *to {
                    v.wrapping_sub(window)
                } else {
                    v.wrapping_add(window)
                }
            })
        }
        Op::Ld { .. } | Op::St { .. } | Op::Atom { .. } => {
            access::exec(launch, ctx, shared, warp, pc, active)?;
        }
        Op::Fence => launch.fences[ctx.linear as usize] += 1,
        Op::FenceCta => {}
        Op::Shfl {
            mode,
            dst,
            dst_pred,
            a,
            b,
            c,
            ..
        } => {
            let mut out = [(0u64, false); 32];
            let mut bad = None;
            let mut m = active;
            while m != 0 {
                let l = m.trailing_zeros() as usize;
                m &= m - 1;
                let lane = l as u32;
                let bval = get(regs, *b, l) as u32 & 31;
                let cval = get(regs, *c, l) as u32;
                let segmask = (cval >> 8) & 31;
                let max_lane = (lane & segmask) | (cval & 31 & !segmask);
                let min_lane = lane & segmask;
                let (j, ok) = match mode {
                    ShflMode::Up => {
                        let j = lane as i32 - bval as i32;
                        (j, j >= max_lane as i32)
                    }
                    ShflMode::Down => ((lane + bval) as i32, lane + bval <= max_lane),
                    ShflMode::Bfly => ((lane ^ bval) as i32, (lane ^ bval) <= max_lane),
                    ShflMode::Idx => {
                        let j = min_lane | (bval & !segmask);
                        (j as i32, j <= max_lane)
                    }
                };
                let j = if ok { j as u32 } else { lane };
                if active >> j & 1 == 0 {
                    bad = Some((lane, j));
                    break;
                }
                out[l] = (get(regs, *a, j as usize) & 0xffff_ffff, ok);
            }
            if let Some((lane, j)) = bad {
                return Err(Fault {
                    kind: FaultKind::Synccheck,
                    message: format!(
                        "synccheck: {}: shfl.sync reads lane {j}, which does not take part (member lanes {active:#010x})",
                        place(launch, ctx, warp, lane, pc)
                    ),
                });
            }
            lanes(active, |l| {
                regs[*dst as usize * 32 + l] = out[l].0;
                if let Some(p) = dst_pred {
                    regs[*p as usize * 32 + l] = out[l].1 as u64;
                }
            });
        }
        Op::Vote {
            mode, dst, pred: p, ..
        } => {
            let mut ballot = 0u32;
            lanes(active, |l| ballot |= (pred(regs, *p, l) as u32) << l);
            if *dst != u32::MAX {
                let value = match mode {
                    VoteMode::Ballot => ballot as u64,
                    VoteMode::All => (ballot == active) as u64,
                    VoteMode::Any => (ballot != 0) as u64,
                    VoteMode::Uni => (ballot == active || ballot == 0) as u64,
                };
                map_lanes!(regs, active, dst, |_l| value)
            }
        }
        Op::Activemask { dst } => map_lanes!(regs, active, dst, |_l| group as u64),
        Op::Bra { .. } | Op::Exit | Op::Bar { .. } => {
            unreachable!("control flow is run by warp.rs")
        }
    }
    Ok(())
}

//! Loads, stores and atomics, with memcheck (live allocation, bounds, alignment), initcheck,
//! shared-memory racecheck, the cross-block visibility check on global memory, and the traffic
//! counters.
//!
//! Visibility: a plain store or an atomic to global memory is tagged with its block and the
//! block's fence count. Another block that reads those bytes with a plain load before the writer
//! has fenced (`membar.gl`, `fence.sc.gpu`, or a release atomic) read a store it is not
//! guaranteed to see, as on an H200; that read is a racecheck fault. Atomics read the latest
//! value (coherence) and are not checked.

use super::alu;
use super::memory::{make_tag, tag_block, tag_fences, MemError};
use super::shared::{Access, Shared};
use super::step::get;
use super::warp::{place, BlockCtx, Warp};
use super::{Fault, FaultKind, Launch};
use crate::ptx::ir::{Addr, AtomOp, Op, Space, Src, Ty};

/// Where the shared window sits in the generic address space (`cvta.shared`).
pub const SHARED_WINDOW: u64 = 0x7e00_0000_0000;
/// Where the parameter buffer sits in the generic address space (`cvta.param`).
pub const PARAM_WINDOW: u64 = 0x7d00_0000_0000;

pub fn generic_base(space: Space) -> u64 {
    match space {
        Space::Shared => SHARED_WINDOW,
        Space::Param => PARAM_WINDOW,
        Space::Global | Space::Generic => 0,
    }
}

/// Where one lane's access lands.
enum Target {
    Global { slot: usize, off: usize },
    Shared(usize),
    Param(usize),
}

struct Fail {
    lane: u32,
    kind: FaultKind,
    what: String,
}

fn fail(lane: usize, kind: FaultKind, what: String) -> Fail {
    Fail {
        lane: lane as u32,
        kind,
        what,
    }
}

#[inline]
fn address(regs: &[u64], addr: Addr, l: usize) -> u64 {
    addr.base
        .map_or(0, |r| regs[r as usize * 32 + l])
        .wrapping_add(addr.offset as u64)
}

fn resolve(
    launch: &Launch,
    space: Space,
    a: u64,
    width: u64,
    l: usize,
    cache: &mut (u64, u64, usize),
) -> Result<Target, Fail> {
    let space = match space {
        Space::Generic
            if (SHARED_WINDOW..SHARED_WINDOW + launch.shared_bytes as u64).contains(&a) =>
        {
            return resolve(launch, Space::Shared, a - SHARED_WINDOW, width, l, cache)
        }
        Space::Generic
            if (PARAM_WINDOW..PARAM_WINDOW + launch.params.len() as u64).contains(&a) =>
        {
            return resolve(launch, Space::Param, a - PARAM_WINDOW, width, l, cache)
        }
        Space::Generic => Space::Global,
        s => s,
    };
    if !a.is_multiple_of(width) {
        return Err(fail(
            l,
            FaultKind::Misaligned,
            format!("{width}-byte access at {a:#x} is misaligned ({space:?} space)"),
        ));
    }
    match space {
        Space::Shared => {
            let a = a & 0xffff_ffff;
            if a + width > launch.shared_bytes as u64 {
                return Err(fail(l, FaultKind::Memcheck, format!(
                    "{width}-byte shared access at {a:#x} is outside the block's {} bytes of shared memory",
                    launch.shared_bytes
                )));
            }
            Ok(Target::Shared(a as usize))
        }
        Space::Param => {
            if a + width > launch.params.len() as u64 {
                return Err(fail(
                    l,
                    FaultKind::Memcheck,
                    format!(
                    "{width}-byte parameter access at offset {a} is outside the {} parameter bytes",
                    launch.params.len()
                ),
                ));
            }
            Ok(Target::Param(a as usize))
        }
        _ => match launch.mem.locate_cached(a, width, cache) {
            Ok((slot, off)) => Ok(Target::Global { slot, off }),
            Err(e) => {
                let e = match e {
                    MemError::Null => "the null address".to_string(),
                    other => other.to_string(),
                };
                Err(fail(
                    l,
                    FaultKind::Memcheck,
                    format!("{width}-byte global access at {a:#x}: {e}"),
                ))
            }
        },
    }
}

/// Counts the distinct 32-byte sectors of one warp-instruction's accesses.
fn sectors(spans: &mut [(u64, u64)]) -> u64 {
    let mut list: Vec<u64> = Vec::with_capacity(spans.len() * 2);
    for &(a, w) in spans.iter() {
        let mut s = a >> 5;
        while s <= (a + w - 1) >> 5 {
            list.push(s);
            s += 1;
        }
    }
    list.sort_unstable();
    list.dedup();
    list.len() as u64
}

pub fn exec(
    launch: &mut Launch,
    ctx: &mut BlockCtx,
    shared: &mut Shared,
    warp: &mut Warp,
    pc: usize,
    active: u32,
) -> Result<(), Fault> {
    match run(launch, ctx, shared, warp, pc, active) {
        Ok(()) => Ok(()),
        Err(f) => {
            let name = match f.kind {
                FaultKind::Memcheck | FaultKind::Misaligned => "memcheck",
                FaultKind::Initcheck => "initcheck",
                FaultKind::Racecheck => "racecheck",
                FaultKind::Synccheck => "synccheck",
                FaultKind::Unsupported => "unsupported",
            };
            Err(Fault {
                kind: f.kind,
                message: format!(
                    "{name}: {}: {}",
                    place(launch, ctx, warp, f.lane, pc),
                    f.what
                ),
            })
        }
    }
}

fn run(
    launch: &mut Launch,
    ctx: &BlockCtx,
    shared: &mut Shared,
    warp: &mut Warp,
    pc: usize,
    active: u32,
) -> Result<(), Fail> {
    let kernel = launch.kernel;
    let op = &kernel.instrs[pc].op;
    let base_tid = warp.index * 32;
    let mut spans = [(0u64, 0u64); 32];
    let mut n_spans = 0usize;
    let mut global_bytes = 0u64;
    let mut cache = (0u64, 0u64, 0usize);
    let result = (|| -> Result<(), Fail> {
        let mut m = active;
        while m != 0 {
            let l = m.trailing_zeros() as usize;
            m &= m - 1;
            let tid = base_tid + l as u32;
            match op {
                Op::Ld {
                    space,
                    ty,
                    dsts,
                    addr,
                    used_mask,
                    reg_bits,
                    ..
                } => {
                    let size = ty.bytes() as usize;
                    let width = size * dsts.len();
                    let a = address(&warp.regs, *addr, l);
                    let mut buf = [0u8; 32];
                    match resolve(launch, *space, a, width as u64, l, &mut cache)? {
                        Target::Global { slot, off } => {
                            let alloc = launch.mem.slot(slot);
                            if !alloc.init.is_init(off, width, *used_mask) {
                                return Err(fail(l, FaultKind::Initcheck, format!(
                                    "{width}-byte global load at {a:#x} reads bytes never written (allocation at {:#x})",
                                    alloc.base
                                )));
                            }
                            // Bytes the instruction loads but does not use (a `used_bytes_mask`
                            // pragma) may race harmlessly: `tags` skips them.
                            for t in alloc.tags(off, width, *used_mask) {
                                let b = tag_block(t).unwrap_or(0);
                                if b != ctx.linear
                                    && tag_fences(t) == launch.fences[b as usize] & 0xfff
                                {
                                    return Err(fail(l, FaultKind::Racecheck, format!(
                                        "global load at {a:#x} reads a store of block {b} made after that block's last fence \
                                         (a missing __threadfence before its signal?)"
                                    )));
                                }
                            }
                            buf[..width].copy_from_slice(&alloc.data[off..off + width]);
                            launch.mem.slot_mut(slot).note_read(off, width);
                            spans[n_spans] = (a, width as u64);
                            n_spans += 1;
                            global_bytes += width as u64;
                        }
                        Target::Shared(off) => {
                            if !shared.init.is_init(off, width, *used_mask) {
                                return Err(fail(l, FaultKind::Initcheck, format!(
                                    "{width}-byte shared load at offset {off} reads bytes never written in this block"
                                )));
                            }
                            shared_race(shared, off, width, tid, ctx.epoch, Access::Read, l)?;
                            buf[..width].copy_from_slice(&shared.data[off..off + width]);
                        }
                        Target::Param(off) => {
                            buf[..width].copy_from_slice(&launch.params[off..off + width])
                        }
                    }
                    for (i, d) in dsts.iter().enumerate() {
                        let Some(d) = d else { continue };
                        let mut raw = [0u8; 8];
                        raw[..size].copy_from_slice(&buf[i * size..(i + 1) * size]);
                        let mut v = u64::from_le_bytes(raw);
                        let reg_bits = *reg_bits as u32;
                        if ty.signed() {
                            v = alu::sext(v, ty.bits()) as u64;
                        }
                        if reg_bits < 64 {
                            v &= (1u64 << reg_bits) - 1;
                        }
                        warp.regs[*d as usize * 32 + l] = v;
                    }
                }
                Op::St {
                    space,
                    ty,
                    srcs,
                    addr,
                } => {
                    let size = ty.bytes() as usize;
                    let width = size * srcs.len();
                    let a = address(&warp.regs, *addr, l);
                    let mut buf = [0u8; 32];
                    for (i, s) in srcs.iter().enumerate() {
                        buf[i * size..(i + 1) * size]
                            .copy_from_slice(&get(&warp.regs, *s, l).to_le_bytes()[..size]);
                    }
                    match resolve(launch, *space, a, width as u64, l, &mut cache)? {
                        Target::Global { slot, off } => {
                            let tag = make_tag(ctx.linear, launch.fences[ctx.linear as usize]);
                            let alloc = launch.mem.slot_mut(slot);
                            alloc.data[off..off + width].copy_from_slice(&buf[..width]);
                            alloc.init.mark(off, width);
                            alloc.note_write(off, width, tag);
                            spans[n_spans] = (a, width as u64);
                            n_spans += 1;
                            global_bytes += width as u64;
                        }
                        Target::Shared(off) => {
                            shared_race(shared, off, width, tid, ctx.epoch, Access::Write, l)?;
                            shared.data[off..off + width].copy_from_slice(&buf[..width]);
                            shared.init.mark(off, width);
                        }
                        Target::Param(_) => {
                            return Err(fail(
                                l,
                                FaultKind::Memcheck,
                                "store to kernel parameter space".into(),
                            ))
                        }
                    }
                }
                Op::Atom {
                    space,
                    op,
                    ty,
                    dst,
                    addr,
                    b,
                    c,
                    release,
                    ftz,
                } => {
                    let width = ty.bytes() as usize;
                    let a = address(&warp.regs, *addr, l);
                    let operand = get(&warp.regs, *b, l);
                    let compare = c.map(|c: Src| get(&warp.regs, c, l));
                    if *release {
                        launch.fences[ctx.linear as usize] += 1;
                    }
                    let old = match resolve(launch, *space, a, width as u64, l, &mut cache)? {
                        Target::Global { slot, off } => {
                            let tag = make_tag(ctx.linear, launch.fences[ctx.linear as usize]);
                            let alloc = launch.mem.slot_mut(slot);
                            if !alloc.init.is_init(off, width, u32::MAX) {
                                return Err(fail(l, FaultKind::Initcheck, format!(
                                    "atomic at {a:#x} reads bytes never written (allocation at {:#x})",
                                    alloc.base
                                )));
                            }
                            let old = read_le(&alloc.data[off..off + width]);
                            let new = atomic(*op, *ty, old, operand, compare, *ftz);
                            alloc.data[off..off + width]
                                .copy_from_slice(&new.to_le_bytes()[..width]);
                            alloc.note_read(off, width);
                            alloc.note_write(off, width, tag);
                            spans[n_spans] = (a, width as u64);
                            n_spans += 1;
                            global_bytes += width as u64;
                            old
                        }
                        Target::Shared(off) => {
                            if !shared.init.is_init(off, width, u32::MAX) {
                                return Err(fail(l, FaultKind::Initcheck, format!(
                                    "shared atomic at offset {off} reads bytes never written in this block"
                                )));
                            }
                            shared_race(shared, off, width, tid, ctx.epoch, Access::Atomic, l)?;
                            let old = read_le(&shared.data[off..off + width]);
                            let new = atomic(*op, *ty, old, operand, compare, false);
                            shared.data[off..off + width]
                                .copy_from_slice(&new.to_le_bytes()[..width]);
                            old
                        }
                        Target::Param(_) => {
                            return Err(fail(
                                l,
                                FaultKind::Memcheck,
                                "atomic on kernel parameter space".into(),
                            ))
                        }
                    };
                    if let Some(d) = dst {
                        warp.regs[*d as usize * 32 + l] = old;
                    }
                }
                _ => unreachable!("access::exec runs memory instructions only"),
            }
        }
        Ok(())
    })();
    let t = &mut launch.traffic;
    let sectors = sectors(&mut spans[..n_spans]);
    match op {
        Op::Ld { .. } => {
            t.bytes_read += global_bytes;
            t.sectors_read += sectors;
        }
        Op::St { .. } => {
            t.bytes_written += global_bytes;
            t.sectors_written += sectors;
        }
        _ => {
            t.bytes_read += global_bytes;
            t.bytes_written += global_bytes;
            t.sectors_read += sectors;
            t.sectors_written += sectors;
        }
    }
    result
}

fn shared_race(
    shared: &mut Shared,
    off: usize,
    width: usize,
    tid: u32,
    epoch: u32,
    access: Access,
    l: usize,
) -> Result<(), Fail> {
    shared.record(off, width, tid, epoch, access).map_err(|race| {
        let who = race.other.map_or("several other threads".to_string(), |t| format!("thread {t}"));
        fail(l, FaultKind::Racecheck, format!(
            "shared {access:?} of {width} byte(s) at offset {off} races with a {:?} by {who} since the last barrier",
            race.other_access
        ))
    })
}

fn read_le(bytes: &[u8]) -> u64 {
    let mut raw = [0u8; 8];
    raw[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(raw)
}

/// The new value of an atomic read-modify-write.
fn atomic(op: AtomOp, ty: Ty, old: u64, b: u64, c: Option<u64>, ftz: bool) -> u64 {
    let mask = ty.mask();
    // A subnormal f32 becomes the zero of its sign.
    let flush = |x: u64| {
        if ftz && x & 0x7f80_0000 == 0 {
            x & 0x8000_0000
        } else {
            x
        }
    };
    let r = match op {
        AtomOp::Add if ty == Ty::F32 => flush(alu::float(
            crate::ptx::ir::FloatOp::Add,
            ty,
            flush(old),
            flush(b),
        )),
        AtomOp::Add if ty == Ty::F64 => alu::float(crate::ptx::ir::FloatOp::Add, ty, old, b),
        AtomOp::Add => old.wrapping_add(b),
        AtomOp::Min => alu::int(crate::ptx::ir::IntOp::Min, ty, old, b),
        AtomOp::Max => alu::int(crate::ptx::ir::IntOp::Max, ty, old, b),
        AtomOp::Inc => {
            if (old & mask) >= (b & mask) {
                0
            } else {
                old + 1
            }
        }
        AtomOp::Dec => {
            if old & mask == 0 || (old & mask) > (b & mask) {
                b
            } else {
                old - 1
            }
        }
        AtomOp::And => old & b,
        AtomOp::Or => old | b,
        AtomOp::Xor => old ^ b,
        AtomOp::Exch => b,
        AtomOp::Cas => {
            if old & mask == b & mask {
                c.unwrap_or(old)
            } else {
                old
            }
        }
    };
    r & mask
}

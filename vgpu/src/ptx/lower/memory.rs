//! Loads, stores, atomics and address conversions.

use super::operands::{unsupported, Opcode, Ops};
use super::Lowered;
use crate::ptx::ir::*;

/// Memory ordering and cache modifiers that change nothing in this single-copy memory model.
const MEM_MODS: &[&str] = &[
    "global",
    "shared",
    "shared::cta",
    "param",
    "weak",
    "relaxed",
    "volatile",
    "gpu",
    "cta",
    "sys",
    "ca",
    "cg",
    "cs",
    "lu",
    "cv",
    "wb",
    "wt",
    "nc",
    "v2",
    "v4",
    "L1::no_allocate",
    "L1::evict_last",
    "L1::evict_first",
    "L1::evict_normal",
    "L2::64B",
    "L2::128B",
    "L2::256B",
];

pub(super) fn mask_of(width: u32) -> u32 {
    if width >= 32 {
        u32::MAX
    } else {
        (1u32 << width) - 1
    }
}

/// `cvta[.to].space`: between generic and state-space addresses.
pub(super) fn cvta(oc: &Opcode, o: &Ops, opcode: &str) -> Result<Lowered, String> {
    oc.only(&["to", "global", "shared", "param"])?;
    o.count(2)?;
    let space = oc.space();
    if space == Space::Generic {
        return Err(unsupported(opcode));
    }
    let ty = oc.ty()?;
    Ok(Lowered::Op(Op::Cvta {
        space,
        to: oc.has("to"),
        dst: o.dst(0)?,
        src: o.src(1, ty)?,
    }))
}

/// `ld[.space][.cop][.vN].type`.
pub(super) fn ld(
    oc: &Opcode,
    o: &Ops,
    _opcode: &str,
    used_mask: Option<u32>,
) -> Result<Lowered, String> {
    oc.only(MEM_MODS)?;
    o.count(2)?;
    let ty = oc.ty()?;
    let dsts = o.dsts(0)?;
    let width = dsts.len() as u32 * ty.bytes();
    Ok(Lowered::Op(Op::Ld {
        space: oc.space(),
        ty,
        dsts,
        addr: o.addr(1)?,
        non_coherent: oc.has("nc"),
        used_mask: used_mask.unwrap_or(u32::MAX) & mask_of(width),
        reg_bits: 64, // set from the declarations once the body is read
    }))
}

/// `st[.space][.cop][.vN].type`.
pub(super) fn st(oc: &Opcode, o: &Ops, _opcode: &str) -> Result<Lowered, String> {
    oc.only(MEM_MODS)?;
    o.count(2)?;
    let ty = oc.ty()?;
    Ok(Lowered::Op(Op::St {
        space: oc.space(),
        ty,
        srcs: o.srcs(1, ty)?,
        addr: o.addr(0)?,
    }))
}

pub(super) fn atom(oc: &Opcode, o: &Ops, opcode: &str) -> Result<Op, String> {
    oc.only(&[
        "global",
        "shared",
        "shared::cta",
        "relaxed",
        "release",
        "acquire",
        "acq_rel",
        "gpu",
        "cta",
        "sys",
        "add",
        "min",
        "max",
        "inc",
        "dec",
        "and",
        "or",
        "xor",
        "exch",
        "cas",
        "noftz",
    ])?;
    let ty = oc.ty()?;
    let op = [
        ("add", AtomOp::Add),
        ("min", AtomOp::Min),
        ("max", AtomOp::Max),
        ("inc", AtomOp::Inc),
        ("dec", AtomOp::Dec),
        ("and", AtomOp::And),
        ("or", AtomOp::Or),
        ("xor", AtomOp::Xor),
        ("exch", AtomOp::Exch),
        ("cas", AtomOp::Cas),
    ]
    .iter()
    .find(|(m, _)| oc.has(m))
    .map(|&(_, op)| op)
    .ok_or_else(|| unsupported(opcode))?;
    if ty.float() && !(op == AtomOp::Add && matches!(ty, Ty::F32 | Ty::F64)) {
        return Err(unsupported(opcode));
    }
    let release = oc.has("release") || oc.has("acq_rel");
    let red = oc.base == "red";
    let first = usize::from(!red);
    let n = if op == AtomOp::Cas { 3 } else { 2 } + first;
    o.count(n)?;
    Ok(Op::Atom {
        space: oc.space(),
        op,
        ty,
        dst: if red { None } else { Some(o.dst(0)?) },
        addr: o.addr(first)?,
        b: o.src(first + 1, ty)?,
        c: if op == AtomOp::Cas {
            Some(o.src(first + 2, ty)?)
        } else {
            None
        },
        release,
        ftz: op == AtomOp::Add && ty == Ty::F32 && !oc.has("noftz"),
    })
}

//! Arithmetic, comparisons and conversions.

use super::operands::{bool_of, cmp_of, unsupported, Opcode, Ops};
use super::{Lowered, RawOperand};
use crate::ptx::ir::*;

/// `mad.lo/hi/wide` on integers, `mad.rn` on floats (an fma).
pub(super) fn mad(oc: &Opcode, o: &Ops, opcode: &str) -> Result<Lowered, String> {
    let ty = oc.ty()?;
    o.count(4)?;
    if ty.float() {
        oc.only(&["rn"])?;
        if !oc.has("rn") {
            return Err(unsupported(opcode));
        }
        return Ok(Lowered::Op(Op::Fma {
            ty,
            dst: o.dst(0)?,
            a: o.src(1, ty)?,
            b: o.src(2, ty)?,
            c: o.src(3, ty)?,
        }));
    }
    oc.only(&["lo", "hi", "wide"])?;
    let wide = oc.has("wide");
    let cty = if wide { widen(ty)? } else { ty };
    Ok(Lowered::Op(Op::Mad {
        ty,
        hi: oc.has("hi"),
        wide,
        dst: o.dst(0)?,
        a: o.src(1, ty)?,
        b: o.src(2, ty)?,
        c: o.src(3, cty)?,
    }))
}

/// `fma.rn` on f32 and f64.
pub(super) fn fma(oc: &Opcode, o: &Ops, opcode: &str) -> Result<Lowered, String> {
    oc.only(&["rn"])?;
    let ty = oc.ty()?;
    if !oc.has("rn") || !matches!(ty, Ty::F32 | Ty::F64) {
        return Err(unsupported(opcode));
    }
    o.count(4)?;
    Ok(Lowered::Op(Op::Fma {
        ty,
        dst: o.dst(0)?,
        a: o.src(1, ty)?,
        b: o.src(2, ty)?,
        c: o.src(3, ty)?,
    }))
}

/// `setp.cmp[.bool].type p[|q], a, b[, c]`.
pub(super) fn setp(oc: &Opcode, o: &Ops, opcode: &str) -> Result<Lowered, String> {
    let raw = o.raw;
    oc.only(&[
        "eq", "ne", "lt", "le", "gt", "ge", "lo", "ls", "hi", "hs", "equ", "neu", "ltu", "leu",
        "gtu", "geu", "num", "nan", "and", "or", "xor",
    ])?;
    let ty = oc.ty()?;
    let cmp = oc
        .mods
        .iter()
        .find_map(|m| cmp_of(m))
        .ok_or_else(|| unsupported(opcode))?;
    let boolop = oc.mods.iter().find_map(|m| bool_of(m));
    if !ty.float() && cmp as u8 >= Cmp::Equ as u8 {
        return Err(unsupported(opcode));
    }
    let (dst, dst_not) = match &raw[0] {
        RawOperand::Pair(a, b) => (o.reg_of(a)?, Some(o.reg_of(b)?)),
        _ => (o.dst(0)?, None),
    };
    let combine = match boolop {
        Some(b) => {
            o.count(4)?;
            Some((b, o.pred(3)?))
        }
        None => {
            o.count(3)?;
            None
        }
    };
    Ok(Lowered::Op(Op::Setp {
        cmp,
        ty,
        dst,
        dst_not,
        a: o.src(1, ty)?,
        b: o.src(2, ty)?,
        combine,
    }))
}

/// `selp.type d, a, b, c`.
pub(super) fn selp(oc: &Opcode, o: &Ops, _opcode: &str) -> Result<Lowered, String> {
    oc.only(&[])?;
    let ty = oc.ty()?;
    o.count(4)?;
    Ok(Lowered::Op(Op::Selp {
        ty,
        dst: o.dst(0)?,
        a: o.src(1, ty)?,
        b: o.src(2, ty)?,
        pred: o.pred(3)?,
    }))
}

pub(super) fn widen(ty: Ty) -> Result<Ty, String> {
    Ok(match ty {
        Ty::U16 => Ty::U32,
        Ty::S16 => Ty::S32,
        Ty::U32 => Ty::U64,
        Ty::S32 => Ty::S64,
        _ => return Err(format!("unsupported instruction: .wide on {ty:?}")),
    })
}

pub(super) fn binary(oc: &Opcode, o: &Ops, opcode: &str) -> Result<Op, String> {
    let ty = oc.ty()?;
    o.count(3)?;
    if ty == Ty::Pred {
        oc.only(&[])?;
        let op = bool_of(oc.base).ok_or_else(|| unsupported(opcode))?;
        return Ok(Op::Pred {
            op: Some(op),
            dst: o.dst(0)?,
            a: o.pred(1)?,
            b: o.pred(2)?,
        });
    }
    if ty.float() {
        if !matches!(ty, Ty::F32 | Ty::F64) {
            return Err(unsupported(opcode));
        }
        let op = match oc.base {
            "add" => FloatOp::Add,
            "sub" => FloatOp::Sub,
            "mul" => FloatOp::Mul,
            "div" => FloatOp::Div,
            "min" => FloatOp::Min,
            "max" => FloatOp::Max,
            _ => return Err(unsupported(opcode)),
        };
        // Without a rounding modifier, add/sub/mul round to nearest (ptxas may contract them into
        // an fma on a GPU; the interpreter rounds each one). div must say .rn to be exact.
        match op {
            FloatOp::Min | FloatOp::Max => oc.only(&[])?,
            FloatOp::Div => {
                oc.only(&["rn"])?;
                if !oc.has("rn") {
                    return Err(unsupported(opcode));
                }
            }
            _ => oc.only(&["rn"])?,
        }
        return Ok(Op::Float {
            op,
            ty,
            dst: o.dst(0)?,
            a: o.src(1, ty)?,
            b: o.src(2, ty)?,
        });
    }
    if oc.base == "mul" && oc.has("wide") {
        oc.only(&["wide"])?;
        widen(ty)?; // 16- and 32-bit sources only: PTX has no 128-bit product
        return Ok(Op::MulWide {
            ty,
            dst: o.dst(0)?,
            a: o.src(1, ty)?,
            b: o.src(2, ty)?,
        });
    }
    let op = match oc.base {
        "add" => IntOp::Add,
        "sub" => IntOp::Sub,
        "mul" if oc.has("hi") => IntOp::MulHi,
        "mul" if oc.has("lo") => IntOp::MulLo,
        "and" => IntOp::And,
        "or" => IntOp::Or,
        "xor" => IntOp::Xor,
        "shl" => IntOp::Shl,
        "shr" => IntOp::Shr,
        "min" => IntOp::Min,
        "max" => IntOp::Max,
        "div" => IntOp::Div,
        "rem" => IntOp::Rem,
        _ => return Err(unsupported(opcode)),
    };
    oc.only(&["lo", "hi"])?;
    let bty = if matches!(op, IntOp::Shl | IntOp::Shr) {
        Ty::U32
    } else {
        ty
    };
    Ok(Op::Int {
        op,
        ty,
        dst: o.dst(0)?,
        a: o.src(1, ty)?,
        b: o.src(2, bty)?,
    })
}

pub(super) fn unary(oc: &Opcode, o: &Ops, opcode: &str) -> Result<Op, String> {
    let ty = oc.ty()?;
    o.count(2)?;
    if ty == Ty::Pred {
        oc.only(&[])?;
        if oc.base != "not" {
            return Err(unsupported(opcode));
        }
        return Ok(Op::Pred {
            op: None,
            dst: o.dst(0)?,
            a: o.pred(1)?,
            b: PredSrc {
                src: Src::Imm(0),
                neg: false,
            },
        });
    }
    let op = match (oc.base, ty.float()) {
        ("not", false) => UnOp::Not,
        ("cnot", false) => UnOp::Not,
        ("neg", false) => UnOp::Neg,
        ("abs", false) => UnOp::Abs,
        ("popc", false) => UnOp::Popc,
        ("clz", false) => UnOp::Clz,
        ("brev", false) => UnOp::Brev,
        ("bfind", false) => UnOp::Bfind {
            shiftamt: oc.has("shiftamt"),
        },
        ("sqrt", true) => UnOp::Sqrt,
        ("neg", true) => UnOp::FNeg,
        ("abs", true) => UnOp::FAbs,
        _ => return Err(unsupported(opcode)),
    };
    if oc.base == "cnot" {
        return Err(unsupported(opcode));
    }
    match op {
        UnOp::Bfind { .. } => oc.only(&["shiftamt"])?,
        UnOp::Sqrt => {
            oc.only(&["rn"])?;
            if !oc.has("rn") || !matches!(ty, Ty::F32 | Ty::F64) {
                return Err(unsupported(opcode));
            }
        }
        UnOp::FNeg | UnOp::FAbs if !matches!(ty, Ty::F32 | Ty::F64) => {
            return Err(unsupported(opcode))
        }
        _ => oc.only(&[])?,
    }
    // popc/clz/bfind write a u32 whatever the source width.
    Ok(Op::Unary {
        op,
        ty,
        dst: o.dst(0)?,
        a: o.src(1, ty)?,
    })
}

pub(super) fn cvt(oc: &Opcode, o: &Ops, opcode: &str) -> Result<Op, String> {
    oc.only(&["rn", "rz", "rm", "rp", "rni", "rzi", "rmi", "rpi", "sat"])?;
    o.count(2)?;
    let types = oc.types();
    let [dst_ty, src_ty] = types[..] else {
        return Err(unsupported(opcode));
    };
    let (rnd, integral) = if oc.has("rn") {
        (Rnd::Rn, false)
    } else if oc.has("rz") {
        (Rnd::Rz, false)
    } else if oc.has("rm") {
        (Rnd::Rm, false)
    } else if oc.has("rp") {
        (Rnd::Rp, false)
    } else if oc.has("rni") {
        (Rnd::Rn, true)
    } else if oc.has("rzi") {
        (Rnd::Rz, true)
    } else if oc.has("rmi") {
        (Rnd::Rm, true)
    } else if oc.has("rpi") {
        (Rnd::Rp, true)
    } else {
        (Rnd::None, false)
    };
    let float_to_int = src_ty.float() && !dst_ty.float();
    let narrowing_float = src_ty.float() && dst_ty.float() && dst_ty.bits() < src_ty.bits();
    let int_to_float = !src_ty.float() && dst_ty.float();
    // PTX requires a rounding mode exactly where the conversion can be inexact.
    let needs = float_to_int || narrowing_float || int_to_float;
    let same_float = src_ty.float() && src_ty == dst_ty;
    let ok = match rnd {
        Rnd::None => !needs && !same_float,
        _ if float_to_int || same_float => integral,
        // An inexact float result: only round-to-nearest-even is modelled.
        Rnd::Rn => !integral && needs,
        _ => false,
    };
    let sat_ok = !oc.has("sat") || float_to_int || dst_ty.float();
    // Half-precision results: only f32 to bf16 rounded to nearest even (`__float2bfloat16`, as in
    // candle's cast kernels) is modelled.
    let bf16_from_f32 = dst_ty == Ty::Bf16 && src_ty == Ty::F32 && rnd == Rnd::Rn && !oc.has("sat");
    let half_dst = matches!(dst_ty, Ty::F16 | Ty::Bf16) && !bf16_from_f32;
    if !ok || !sat_ok || half_dst || (src_ty == Ty::Bf16 && !dst_ty.float()) {
        return Err(unsupported(opcode));
    }
    Ok(Op::Cvt {
        dst_ty,
        src_ty,
        rnd,
        integral,
        sat: oc.has("sat"),
        dst: o.dst(0)?,
        src: o.src(1, src_ty)?,
    })
}

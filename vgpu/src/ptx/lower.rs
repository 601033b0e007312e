//! One instruction's opcode and raw operands to an `ir::Op`. Every modifier is either understood
//! or rejected: an instruction whose semantics the executor does not implement exactly is an
//! "unsupported instruction" error, never a silent approximation.

use super::ir::*;
use super::parse::{parse_int, Sym};

#[derive(Clone, Debug)]
pub enum RawOperand {
    Name(String),
    Num { neg: bool, text: String },
    Addr { base: Option<String>, offset: i64 },
    Vec(Vec<RawOperand>),
    Not(Box<RawOperand>),
    Pair(String, String),
    Sink,
}

pub enum Lowered {
    Op(Op),
    /// A branch to a label, resolved once the whole body is read.
    Branch(String),
}

type Resolve<'a> = dyn Fn(&str) -> Option<Sym> + 'a;

/// The opcode split into its base and modifiers.
struct Opcode<'a> {
    base: &'a str,
    mods: Vec<&'a str>,
}

impl<'a> Opcode<'a> {
    fn has(&self, m: &str) -> bool {
        self.mods.contains(&m)
    }
    /// The types among the modifiers, in order.
    fn types(&self) -> Vec<Ty> {
        self.mods.iter().filter_map(|m| Ty::parse(m)).collect()
    }
    fn ty(&self) -> Result<Ty, String> {
        self.types()
            .last()
            .copied()
            .ok_or_else(|| "missing type".to_string())
    }
    fn space(&self) -> Space {
        if self.has("global") {
            Space::Global
        } else if self.has("shared") || self.has("shared::cta") {
            Space::Shared
        } else if self.has("param") {
            Space::Param
        } else {
            Space::Generic
        }
    }
    /// Fails on any modifier not in `allowed` (types are always allowed).
    fn only(&self, allowed: &[&str]) -> Result<(), String> {
        for m in &self.mods {
            if Ty::parse(m).is_none() && !allowed.contains(m) {
                return Err(format!(
                    "unsupported instruction: modifier .{m} of {}",
                    self.base
                ));
            }
        }
        Ok(())
    }
}

fn unsupported(op: &str) -> String {
    format!("unsupported instruction {op}")
}

/// Bits of a literal at type `ty`.
fn literal(neg: bool, text: &str, ty: Ty) -> Result<u64, String> {
    let bits = if let Some(h) = text.strip_prefix("0f").or_else(|| text.strip_prefix("0F")) {
        let raw = u32::from_str_radix(h, 16).map_err(|_| format!("bad f32 literal {text}"))?;
        let v = f32::from_bits(raw);
        let v = if neg { -v } else { v };
        match ty {
            Ty::F64 => (v as f64).to_bits(),
            _ => v.to_bits() as u64,
        }
    } else if let Some(h) = text.strip_prefix("0d").or_else(|| text.strip_prefix("0D")) {
        let raw = u64::from_str_radix(h, 16).map_err(|_| format!("bad f64 literal {text}"))?;
        let v = f64::from_bits(raw);
        let v = if neg { -v } else { v };
        match ty {
            Ty::F32 => (v as f32).to_bits() as u64,
            _ => v.to_bits(),
        }
    } else if text.contains('.') {
        let v: f64 = text.parse().map_err(|_| format!("bad literal {text}"))?;
        let v = if neg { -v } else { v };
        match ty {
            Ty::F32 => (v as f32).to_bits() as u64,
            _ => v.to_bits(),
        }
    } else {
        let v = parse_int(text).ok_or_else(|| format!("bad integer literal {text}"))?;
        match ty {
            Ty::F32 => {
                let f = v as f32;
                (if neg { -f } else { f }).to_bits() as u64
            }
            Ty::F64 => {
                let f = v as f64;
                (if neg { -f } else { f }).to_bits()
            }
            _ => {
                if neg {
                    v.wrapping_neg()
                } else {
                    v
                }
            }
        }
    };
    Ok(bits & ty.mask())
}

struct Ops<'a, 'b> {
    raw: &'a [RawOperand],
    resolve: &'a Resolve<'b>,
}

impl Ops<'_, '_> {
    fn count(&self, n: usize) -> Result<(), String> {
        if self.raw.len() == n {
            Ok(())
        } else {
            Err(format!("expected {n} operands, found {}", self.raw.len()))
        }
    }
    fn reg_of(&self, name: &str) -> Result<Reg, String> {
        match (self.resolve)(name) {
            Some(Sym::Reg(r)) => Ok(r),
            _ => Err(format!("{name} is not a register")),
        }
    }
    fn dst(&self, i: usize) -> Result<Reg, String> {
        match &self.raw[i] {
            RawOperand::Name(n) => self.reg_of(n),
            other => Err(format!("destination {other:?} is not a register")),
        }
    }
    fn src(&self, i: usize, ty: Ty) -> Result<Src, String> {
        src_of(&self.raw[i], ty, self.resolve)
    }
    fn pred(&self, i: usize) -> Result<PredSrc, String> {
        match &self.raw[i] {
            RawOperand::Not(inner) => Ok(PredSrc {
                src: src_of(inner, Ty::Pred, self.resolve)?,
                neg: true,
            }),
            other => Ok(PredSrc {
                src: src_of(other, Ty::Pred, self.resolve)?,
                neg: false,
            }),
        }
    }
    fn addr(&self, i: usize) -> Result<Addr, String> {
        match &self.raw[i] {
            RawOperand::Addr { base, offset } => {
                let Some(name) = base else {
                    return Ok(Addr {
                        base: None,
                        offset: *offset,
                    });
                };
                match (self.resolve)(name) {
                    Some(Sym::Reg(r)) => Ok(Addr {
                        base: Some(r),
                        offset: *offset,
                    }),
                    Some(Sym::Shared(o)) | Some(Sym::Param(o)) => Ok(Addr {
                        base: None,
                        offset: o as i64 + offset,
                    }),
                    None => Err(format!("unknown name {name} in an address")),
                }
            }
            other => Err(format!("{other:?} is not an address")),
        }
    }
    /// A destination list: one register, or a `{a, b, ...}` vector with `_` sinks.
    fn dsts(&self, i: usize) -> Result<Vec<Option<Reg>>, String> {
        match &self.raw[i] {
            RawOperand::Vec(parts) => parts
                .iter()
                .map(|p| match p {
                    RawOperand::Sink => Ok(None),
                    RawOperand::Name(n) => self.reg_of(n).map(Some),
                    other => Err(format!("{other:?} is not a register")),
                })
                .collect(),
            _ => Ok(vec![Some(self.dst(i)?)]),
        }
    }
    fn srcs(&self, i: usize, ty: Ty) -> Result<Vec<Src>, String> {
        match &self.raw[i] {
            RawOperand::Vec(parts) => parts.iter().map(|p| src_of(p, ty, self.resolve)).collect(),
            _ => Ok(vec![self.src(i, ty)?]),
        }
    }
}

fn src_of(raw: &RawOperand, ty: Ty, resolve: &Resolve) -> Result<Src, String> {
    match raw {
        RawOperand::Name(n) => match resolve(n) {
            Some(Sym::Reg(r)) => Ok(Src::Reg(r)),
            // The address of a shared variable in the shared window (`mov.u32 %r, s_hist`).
            Some(Sym::Shared(o)) => Ok(Src::Imm(o as u64)),
            Some(Sym::Param(_)) => Err(format!("the address of parameter {n} is not supported")),
            None => Err(format!("unknown name {n}")),
        },
        RawOperand::Num { neg, text } => Ok(Src::Imm(literal(*neg, text, ty)?)),
        other => Err(format!("{other:?} is not a source operand")),
    }
}

fn special(name: &str) -> Option<Special> {
    let dim = |s: &str| match s {
        "x" => Some(0u8),
        "y" => Some(1),
        "z" => Some(2),
        _ => None,
    };
    if let Some((reg, d)) = name.split_once('.') {
        let d = dim(d)?;
        return Some(match reg {
            "%tid" => Special::Tid(d),
            "%ntid" => Special::Ntid(d),
            "%ctaid" => Special::Ctaid(d),
            "%nctaid" => Special::Nctaid(d),
            _ => return None,
        });
    }
    Some(match name {
        "%laneid" => Special::LaneId,
        "%warpid" => Special::WarpId,
        "%nwarpid" => Special::NWarpId,
        "%lanemask_lt" => Special::LanemaskLt,
        "%lanemask_le" => Special::LanemaskLe,
        "%lanemask_gt" => Special::LanemaskGt,
        "%lanemask_ge" => Special::LanemaskGe,
        "%lanemask_eq" => Special::LanemaskEq,
        "%clock" => Special::Clock,
        "%clock64" => Special::Clock64,
        "%smid" => Special::SmId,
        _ => return None,
    })
}

fn cmp_of(m: &str) -> Option<Cmp> {
    Some(match m {
        "eq" => Cmp::Eq,
        "ne" => Cmp::Ne,
        "lt" | "lo" => Cmp::Lt,
        "le" | "ls" => Cmp::Le,
        "gt" | "hi" => Cmp::Gt,
        "ge" | "hs" => Cmp::Ge,
        "equ" => Cmp::Equ,
        "neu" => Cmp::Neu,
        "ltu" => Cmp::Ltu,
        "leu" => Cmp::Leu,
        "gtu" => Cmp::Gtu,
        "geu" => Cmp::Geu,
        "num" => Cmp::Num,
        "nan" => Cmp::Nan,
        _ => return None,
    })
}

fn bool_of(m: &str) -> Option<BoolOp> {
    Some(match m {
        "and" => BoolOp::And,
        "or" => BoolOp::Or,
        "xor" => BoolOp::Xor,
        _ => return None,
    })
}

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

pub fn lower(
    opcode: &str,
    raw: &[RawOperand],
    resolve: &Resolve,
    used_mask: Option<u32>,
) -> Result<Lowered, String> {
    let mut parts = opcode.split('.');
    let base = parts.next().unwrap_or("");
    let oc = Opcode {
        base,
        mods: parts.collect(),
    };
    let o = Ops { raw, resolve };
    let op = match base {
        "mov" => {
            oc.only(&[])?;
            let ty = oc.ty()?;
            o.count(2)?;
            match (&raw[0], &raw[1]) {
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
                (_, RawOperand::Name(n)) if n.starts_with('%') && special(n).is_some() => {
                    Op::Special {
                        dst: o.dst(0)?,
                        sp: special(n).unwrap(),
                    }
                }
                _ => Op::Mov {
                    ty,
                    dst: o.dst(0)?,
                    src: o.src(1, ty)?,
                },
            }
        }
        "add" | "sub" | "mul" | "min" | "max" | "div" | "rem" | "and" | "or" | "xor" | "shl"
        | "shr" => binary(&oc, &o, opcode)?,
        "mad" => {
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
            Op::Mad {
                ty,
                hi: oc.has("hi"),
                wide,
                dst: o.dst(0)?,
                a: o.src(1, ty)?,
                b: o.src(2, ty)?,
                c: o.src(3, cty)?,
            }
        }
        "fma" => {
            oc.only(&["rn"])?;
            let ty = oc.ty()?;
            if !oc.has("rn") || !matches!(ty, Ty::F32 | Ty::F64) {
                return Err(unsupported(opcode));
            }
            o.count(4)?;
            Op::Fma {
                ty,
                dst: o.dst(0)?,
                a: o.src(1, ty)?,
                b: o.src(2, ty)?,
                c: o.src(3, ty)?,
            }
        }
        "not" | "neg" | "abs" | "popc" | "clz" | "brev" | "bfind" | "sqrt" | "cnot" => {
            unary(&oc, &o, opcode)?
        }
        "setp" => {
            oc.only(&[
                "eq", "ne", "lt", "le", "gt", "ge", "lo", "ls", "hi", "hs", "equ", "neu", "ltu",
                "leu", "gtu", "geu", "num", "nan", "and", "or", "xor",
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
            Op::Setp {
                cmp,
                ty,
                dst,
                dst_not,
                a: o.src(1, ty)?,
                b: o.src(2, ty)?,
                combine,
            }
        }
        "selp" => {
            oc.only(&[])?;
            let ty = oc.ty()?;
            o.count(4)?;
            Op::Selp {
                ty,
                dst: o.dst(0)?,
                a: o.src(1, ty)?,
                b: o.src(2, ty)?,
                pred: o.pred(3)?,
            }
        }
        "cvt" => cvt(&oc, &o, opcode)?,
        "cvta" => {
            oc.only(&["to", "global", "shared", "param"])?;
            o.count(2)?;
            let space = oc.space();
            if space == Space::Generic {
                return Err(unsupported(opcode));
            }
            let ty = oc.ty()?;
            Op::Cvta {
                space,
                to: oc.has("to"),
                dst: o.dst(0)?,
                src: o.src(1, ty)?,
            }
        }
        "ld" => {
            oc.only(MEM_MODS)?;
            o.count(2)?;
            let ty = oc.ty()?;
            let dsts = o.dsts(0)?;
            let width = dsts.len() as u32 * ty.bytes();
            Op::Ld {
                space: oc.space(),
                ty,
                dsts,
                addr: o.addr(1)?,
                non_coherent: oc.has("nc"),
                used_mask: used_mask.unwrap_or(u32::MAX) & mask_of(width),
                reg_bits: 64, // set from the declarations once the body is read
            }
        }
        "st" => {
            oc.only(MEM_MODS)?;
            o.count(2)?;
            let ty = oc.ty()?;
            Op::St {
                space: oc.space(),
                ty,
                srcs: o.srcs(1, ty)?,
                addr: o.addr(0)?,
            }
        }
        "atom" | "red" => atom(&oc, &o, opcode)?,
        "membar" | "fence" => {
            oc.only(&["gl", "sys", "cta", "gpu", "sc", "acq_rel"])?;
            if oc.has("cta") {
                Op::FenceCta
            } else {
                Op::Fence
            }
        }
        "bar" | "barrier" => {
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
            Op::Bar {
                id: o.src(0, Ty::U32)?,
                count: if raw.len() > 1 {
                    Some(o.src(1, Ty::U32)?)
                } else {
                    None
                },
            }
        }
        "shfl" => {
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
            Op::Shfl {
                mode,
                dst,
                dst_pred,
                a: o.src(1, Ty::B32)?,
                b: o.src(2, Ty::B32)?,
                c: o.src(3, Ty::B32)?,
                mask: o.src(4, Ty::B32)?,
            }
        }
        "vote" => {
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
            Op::Vote {
                mode,
                dst: o.dst(0)?,
                pred: o.pred(1)?,
                mask: o.src(2, Ty::B32)?,
            }
        }
        "activemask" => {
            o.count(1)?;
            Op::Activemask { dst: o.dst(0)? }
        }
        "bra" => {
            oc.only(&["uni"])?;
            o.count(1)?;
            return match &raw[0] {
                RawOperand::Name(label) => Ok(Lowered::Branch(label.clone())),
                _ => Err("branch target is not a label".into()),
            };
        }
        "ret" | "exit" => {
            oc.only(&[])?;
            Op::Exit
        }
        _ => return Err(unsupported(opcode)),
    };
    Ok(Lowered::Op(op))
}

fn mask_of(width: u32) -> u32 {
    if width >= 32 {
        u32::MAX
    } else {
        (1u32 << width) - 1
    }
}

fn widen(ty: Ty) -> Result<Ty, String> {
    Ok(match ty {
        Ty::U16 => Ty::U32,
        Ty::S16 => Ty::S32,
        Ty::U32 => Ty::U64,
        Ty::S32 => Ty::S64,
        _ => return Err(format!("unsupported instruction: .wide on {ty:?}")),
    })
}

fn binary(oc: &Opcode, o: &Ops, opcode: &str) -> Result<Op, String> {
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

fn unary(oc: &Opcode, o: &Ops, opcode: &str) -> Result<Op, String> {
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

fn cvt(oc: &Opcode, o: &Ops, opcode: &str) -> Result<Op, String> {
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
    // Half-precision results are not modelled (the kernels only widen f16/bf16).
    let half_dst = matches!(dst_ty, Ty::F16 | Ty::Bf16);
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

fn atom(oc: &Opcode, o: &Ops, opcode: &str) -> Result<Op, String> {
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

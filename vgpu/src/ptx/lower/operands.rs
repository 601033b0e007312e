//! Opcodes and operands: modifiers, literals at an instruction's type, registers, addresses.

use super::{RawOperand, Resolve};
use crate::ptx::ir::*;
use crate::ptx::parse::{parse_int, Sym};

/// The opcode split into its base and modifiers.
pub(super) struct Opcode<'a> {
    pub base: &'a str,
    pub mods: Vec<&'a str>,
}

impl<'a> Opcode<'a> {
    pub(super) fn has(&self, m: &str) -> bool {
        self.mods.contains(&m)
    }
    /// The types among the modifiers, in order.
    pub(super) fn types(&self) -> Vec<Ty> {
        self.mods.iter().filter_map(|m| Ty::parse(m)).collect()
    }
    pub(super) fn ty(&self) -> Result<Ty, String> {
        self.types()
            .last()
            .copied()
            .ok_or_else(|| "missing type".to_string())
    }
    pub(super) fn space(&self) -> Space {
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
    pub(super) fn only(&self, allowed: &[&str]) -> Result<(), String> {
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

pub(super) fn unsupported(op: &str) -> String {
    format!("unsupported instruction {op}")
}

/// Bits of a literal at type `ty`.
pub(super) fn literal(neg: bool, text: &str, ty: Ty) -> Result<u64, String> {
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

pub(super) struct Ops<'a, 'b> {
    pub raw: &'a [RawOperand],
    pub resolve: &'a Resolve<'b>,
}

impl Ops<'_, '_> {
    pub(super) fn count(&self, n: usize) -> Result<(), String> {
        if self.raw.len() == n {
            Ok(())
        } else {
            Err(format!("expected {n} operands, found {}", self.raw.len()))
        }
    }
    pub(super) fn reg_of(&self, name: &str) -> Result<Reg, String> {
        match (self.resolve)(name) {
            Some(Sym::Reg(r)) => Ok(r),
            _ => Err(format!("{name} is not a register")),
        }
    }
    pub(super) fn dst(&self, i: usize) -> Result<Reg, String> {
        match &self.raw[i] {
            RawOperand::Name(n) => self.reg_of(n),
            other => Err(format!("destination {other:?} is not a register")),
        }
    }
    pub(super) fn src(&self, i: usize, ty: Ty) -> Result<Src, String> {
        src_of(&self.raw[i], ty, self.resolve)
    }
    pub(super) fn pred(&self, i: usize) -> Result<PredSrc, String> {
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
    pub(super) fn addr(&self, i: usize) -> Result<Addr, String> {
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
    pub(super) fn dsts(&self, i: usize) -> Result<Vec<Option<Reg>>, String> {
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
    pub(super) fn srcs(&self, i: usize, ty: Ty) -> Result<Vec<Src>, String> {
        match &self.raw[i] {
            RawOperand::Vec(parts) => parts.iter().map(|p| src_of(p, ty, self.resolve)).collect(),
            _ => Ok(vec![self.src(i, ty)?]),
        }
    }
}

pub(super) fn src_of(raw: &RawOperand, ty: Ty, resolve: &Resolve) -> Result<Src, String> {
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

pub(super) fn special(name: &str) -> Option<Special> {
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

pub(super) fn cmp_of(m: &str) -> Option<Cmp> {
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

pub(super) fn bool_of(m: &str) -> Option<BoolOp> {
    Some(match m {
        "and" => BoolOp::And,
        "or" => BoolOp::Or,
        "xor" => BoolOp::Xor,
        _ => return None,
    })
}

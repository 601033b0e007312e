//! The arithmetic of one lane: pure functions of register bits, by PTX's definitions.
//!
//! Integers wrap at the type's width; shifts by the width or more give 0 (or the sign for
//! `shr.s`). Floats are IEEE binary32/binary64 with round-to-nearest-even (PTX `.rn`, the only
//! rounding the kernels use for arithmetic), subnormals kept (no `.ftz`), and a NaN result is the
//! canonical NaN (0x7fffffff for f32, as NVIDIA GPUs give; 0x7fffffffffffffff for f64).

use crate::ptx::ir::{Cmp, FloatOp, IntOp, Rnd, Ty, UnOp};

pub const NAN_F32: u32 = 0x7fff_ffff;
pub const NAN_F64: u64 = 0x7fff_ffff_ffff_ffff;

/// Sign-extends the low `bits` of `v` to 64 bits.
#[inline]
pub fn sext(v: u64, bits: u32) -> i64 {
    let s = 64 - bits;
    ((v << s) as i64) >> s
}

#[inline]
fn f32_of(v: u64) -> f32 {
    f32::from_bits(v as u32)
}

#[inline]
fn f64_of(v: u64) -> f64 {
    f64::from_bits(v)
}

#[inline]
pub fn from_f32(x: f32) -> u64 {
    if x.is_nan() {
        NAN_F32 as u64
    } else {
        x.to_bits() as u64
    }
}

#[inline]
pub fn from_f64(x: f64) -> u64 {
    if x.is_nan() {
        NAN_F64
    } else {
        x.to_bits()
    }
}

#[inline]
pub fn int(op: IntOp, ty: Ty, a: u64, b: u64) -> u64 {
    let bits = ty.bits();
    let mask = ty.mask();
    let (a, b) = (
        a & mask,
        b & if matches!(op, IntOp::Shl | IntOp::Shr) {
            u32::MAX as u64
        } else {
            mask
        },
    );
    let signed = ty.signed();
    let r = match op {
        IntOp::Add => a.wrapping_add(b),
        IntOp::Sub => a.wrapping_sub(b),
        IntOp::MulLo => a.wrapping_mul(b),
        IntOp::MulHi => {
            if signed {
                ((sext(a, bits) as i128 * sext(b, bits) as i128) >> bits) as u64
            } else {
                ((a as u128 * b as u128) >> bits) as u64
            }
        }
        IntOp::And => a & b,
        IntOp::Or => a | b,
        IntOp::Xor => a ^ b,
        IntOp::Shl => {
            if b >= bits as u64 {
                0
            } else {
                a << b
            }
        }
        IntOp::Shr => {
            if signed {
                (sext(a, bits) >> b.min(bits as u64 - 1)) as u64
            } else if b >= bits as u64 {
                0
            } else {
                a >> b
            }
        }
        IntOp::Min | IntOp::Max => {
            let less = if signed {
                sext(a, bits) < sext(b, bits)
            } else {
                a < b
            };
            if less == (op == IntOp::Min) {
                a
            } else {
                b
            }
        }
        IntOp::Div | IntOp::Rem => {
            if b == 0 {
                // Unspecified in PTX; the GPU gives all ones for a quotient.
                if op == IntOp::Div {
                    u64::MAX
                } else {
                    a
                }
            } else if signed {
                let (x, y) = (sext(a, bits), sext(b, bits));
                (if op == IntOp::Div {
                    x.wrapping_div(y)
                } else {
                    x.wrapping_rem(y)
                }) as u64
            } else if op == IntOp::Div {
                a / b
            } else {
                a % b
            }
        }
    };
    r & mask
}

/// `mul.wide`: the full product of two `ty` values.
#[inline]
pub fn mul_wide(ty: Ty, a: u64, b: u64) -> u64 {
    let bits = ty.bits();
    let r = if ty.signed() {
        (sext(a, bits).wrapping_mul(sext(b, bits))) as u64
    } else {
        (a & ty.mask()).wrapping_mul(b & ty.mask())
    };
    if bits == 32 {
        r
    } else {
        r & ((1u64 << (2 * bits)) - 1)
    }
}

#[inline]
pub fn unary(op: UnOp, ty: Ty, a: u64) -> u64 {
    let bits = ty.bits();
    let mask = ty.mask();
    let a = a & mask;
    match op {
        UnOp::Not => !a & mask,
        UnOp::Neg => a.wrapping_neg() & mask,
        UnOp::Abs => (sext(a, bits).wrapping_abs() as u64) & mask,
        UnOp::Popc => a.count_ones() as u64,
        UnOp::Clz => (a.leading_zeros() - (64 - bits)) as u64,
        UnOp::Brev => a.reverse_bits() >> (64 - bits),
        UnOp::Bfind { shiftamt } => {
            // The most significant bit that differs from the sign (signed) or is set (unsigned).
            let x = if ty.signed() && sext(a, bits) < 0 {
                !a & mask
            } else {
                a
            };
            if x == 0 {
                u32::MAX as u64
            } else {
                let pos = 63 - x.leading_zeros();
                (if shiftamt { bits - 1 - pos } else { pos }) as u64
            }
        }
        UnOp::Sqrt => match ty {
            Ty::F32 => from_f32(f32_of(a).sqrt()),
            _ => from_f64(f64_of(a).sqrt()),
        },
        UnOp::FNeg => a ^ (1u64 << (bits - 1)),
        UnOp::FAbs => a & !(1u64 << (bits - 1)),
    }
}

/// min/max: a NaN operand gives the other one; two NaNs the canonical NaN; -0 is below +0.
fn fminmax<T: PartialOrd + Copy>(
    a: T,
    b: T,
    a_nan: bool,
    b_nan: bool,
    a_neg0_vs_b: bool,
    max: bool,
) -> Option<T> {
    if a_nan && b_nan {
        return None;
    }
    if a_nan {
        return Some(b);
    }
    if b_nan {
        return Some(a);
    }
    if a == b {
        // Equal values differ only for signed zeros: min takes the negative one.
        return Some(if a_neg0_vs_b != max { a } else { b });
    }
    Some(if (a < b) != max { a } else { b })
}

#[inline]
pub fn float(op: FloatOp, ty: Ty, a: u64, b: u64) -> u64 {
    if ty == Ty::F32 {
        let (x, y) = (f32_of(a), f32_of(b));
        match op {
            FloatOp::Add => from_f32(x + y),
            FloatOp::Sub => from_f32(x - y),
            FloatOp::Mul => from_f32(x * y),
            FloatOp::Div => from_f32(x / y),
            FloatOp::Min | FloatOp::Max => fminmax(
                x,
                y,
                x.is_nan(),
                y.is_nan(),
                x.is_sign_negative(),
                op == FloatOp::Max,
            )
            .map_or(NAN_F32 as u64, |v| v.to_bits() as u64),
        }
    } else {
        let (x, y) = (f64_of(a), f64_of(b));
        match op {
            FloatOp::Add => from_f64(x + y),
            FloatOp::Sub => from_f64(x - y),
            FloatOp::Mul => from_f64(x * y),
            FloatOp::Div => from_f64(x / y),
            FloatOp::Min | FloatOp::Max => fminmax(
                x,
                y,
                x.is_nan(),
                y.is_nan(),
                x.is_sign_negative(),
                op == FloatOp::Max,
            )
            .map_or(NAN_F64, |v| v.to_bits()),
        }
    }
}

#[inline]
pub fn fma(ty: Ty, a: u64, b: u64, c: u64) -> u64 {
    if ty == Ty::F32 {
        from_f32(f32_of(a).mul_add(f32_of(b), f32_of(c)))
    } else {
        from_f64(f64_of(a).mul_add(f64_of(b), f64_of(c)))
    }
}

#[inline]
pub fn compare(cmp: Cmp, ty: Ty, a: u64, b: u64) -> bool {
    if ty.float() {
        let (x, y) = match ty {
            Ty::F32 => (f32_of(a) as f64, f32_of(b) as f64),
            Ty::F64 => (f64_of(a), f64_of(b)),
            Ty::F16 => (f16_to_f32(a as u16) as f64, f16_to_f32(b as u16) as f64),
            _ => (
                f32::from_bits((a as u32) << 16) as f64,
                f32::from_bits((b as u32) << 16) as f64,
            ),
        };
        let nan = x.is_nan() || y.is_nan();
        return match cmp {
            Cmp::Eq => !nan && x == y,
            Cmp::Ne => !nan && x != y,
            Cmp::Lt => !nan && x < y,
            Cmp::Le => !nan && x <= y,
            Cmp::Gt => !nan && x > y,
            Cmp::Ge => !nan && x >= y,
            Cmp::Equ => nan || x == y,
            Cmp::Neu => nan || x != y,
            Cmp::Ltu => nan || x < y,
            Cmp::Leu => nan || x <= y,
            Cmp::Gtu => nan || x > y,
            Cmp::Geu => nan || x >= y,
            Cmp::Num => !nan,
            Cmp::Nan => nan,
        };
    }
    let bits = ty.bits();
    let ord = if ty.signed() {
        sext(a, bits).cmp(&sext(b, bits))
    } else {
        (a & ty.mask()).cmp(&(b & ty.mask()))
    };
    use std::cmp::Ordering::*;
    match cmp {
        Cmp::Eq => ord == Equal,
        Cmp::Ne => ord != Equal,
        Cmp::Lt => ord == Less,
        Cmp::Le => ord != Greater,
        Cmp::Gt => ord == Greater,
        Cmp::Ge => ord != Less,
        _ => false,
    }
}

/// IEEE binary16 to binary32 (exact).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = if exp == 0 {
        if man == 0 {
            sign
        } else {
            // Subnormal: normalise.
            let shift = man.leading_zeros() - 21;
            let man = (man << shift) & 0x3ff;
            sign | ((127 - 15 + 1 - shift) << 23) | (man << 13)
        }
    } else if exp == 31 {
        sign | 0x7f80_0000 | (man << 13) | if man != 0 { 0x0040_0000 } else { 0 }
    } else {
        sign | ((exp + 127 - 15) << 23) | (man << 13)
    };
    f32::from_bits(bits)
}

/// binary32 to bfloat16, rounded to nearest even (`cvt.rn.bf16.f32`); a NaN gives the canonical
/// NaN 0x7fff.
pub fn bf16_rn(x: f32) -> u16 {
    if x.is_nan() {
        return 0x7fff;
    }
    let bits = x.to_bits();
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

fn round_integral(x: f64, rnd: Rnd) -> f64 {
    match rnd {
        Rnd::Rn => x.round_ties_even(),
        Rnd::Rz => x.trunc(),
        Rnd::Rm => x.floor(),
        Rnd::Rp => x.ceil(),
        Rnd::None => x,
    }
}

/// `cvt`: integers extend by the source's signedness and truncate to the destination; floats to
/// integers round as asked and saturate (NaN gives 0); the lowering admits only `.rn` where a
/// float result can be inexact.
pub fn cvt(dst: Ty, src: Ty, rnd: Rnd, integral: bool, sat: bool, v: u64) -> u64 {
    let value_f64 = |v: u64| -> f64 {
        match src {
            Ty::F32 => f32_of(v) as f64,
            Ty::F64 => f64_of(v),
            Ty::F16 => f16_to_f32(v as u16) as f64,
            _ => f32::from_bits((v as u32) << 16) as f64,
        }
    };
    match (src.float(), dst.float()) {
        (false, false) => {
            let x = if src.signed() {
                sext(v, src.bits()) as u64
            } else {
                v & src.mask()
            };
            x & dst.mask()
        }
        (false, true) => {
            let x = if src.signed() {
                sext(v, src.bits()) as f64
            } else {
                (v & src.mask()) as f64
            };
            // Wide integers round once, straight to the destination.
            match dst {
                Ty::F32 => {
                    let f = if src.signed() {
                        sext(v, src.bits()) as f32
                    } else {
                        (v & src.mask()) as f32
                    };
                    f.to_bits() as u64
                }
                _ => {
                    let f = if src.bits() == 64 && !src.signed() {
                        v as f64
                    } else if src.bits() == 64 {
                        v as i64 as f64
                    } else {
                        x
                    };
                    f.to_bits()
                }
            }
        }
        (true, false) => {
            let x = round_integral(value_f64(v), rnd);
            let bits = dst.bits();
            if dst.signed() {
                let (lo, hi) = (
                    -(2f64.powi(bits as i32 - 1)),
                    2f64.powi(bits as i32 - 1) - 1.0,
                );
                let r = if x.is_nan() { 0.0 } else { x.clamp(lo, hi) };
                (r as i64 as u64) & dst.mask()
            } else {
                let hi = if bits == 64 {
                    u64::MAX as f64
                } else {
                    (dst.mask()) as f64
                };
                let r = if x.is_nan() { 0.0 } else { x.clamp(0.0, hi) };
                (if bits == 64 {
                    r as u64
                } else {
                    r as u64 & dst.mask()
                }) & dst.mask()
            }
        }
        (true, true) => {
            let x = value_f64(v);
            let x = if integral { round_integral(x, rnd) } else { x };
            // .sat clamps to [0, 1], and a NaN becomes +0.
            let x = if sat && x.is_nan() {
                0.0
            } else if sat {
                x.clamp(0.0, 1.0)
            } else {
                x
            };
            match dst {
                Ty::F32 => from_f32(if src == Ty::F32 && !integral && !sat {
                    f32_of(v)
                } else {
                    x as f32
                }),
                Ty::F64 => from_f64(x),
                Ty::Bf16 => bf16_rn(f32_of(v)) as u64,
                _ => unreachable!("the lowering rejects conversions to f16"),
            }
        }
    }
}

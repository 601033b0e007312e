//! A warp's registers as 32-lane rows: register `r` of lane `l` is `regs[r * 32 + l]`. An
//! operation runs one lane loop over whole rows, with the operation chosen outside the loop, so the
//! loop compiles to straight-line (often vectorised) code.

use super::alu;
use crate::ptx::ir::{Cmp, IntOp, Src, Ty};

/// Calls `f` for every lane in `mask`.
#[inline(always)]
pub fn lanes(mask: u32, mut f: impl FnMut(usize)) {
    if mask == u32::MAX {
        for l in 0..32 {
            f(l)
        }
    } else {
        let mut m = mask;
        while m != 0 {
            f(m.trailing_zeros() as usize);
            m &= m - 1;
        }
    }
}

/// A source operand for the lane loop: the offset of a register's row, or an immediate.
#[derive(Clone, Copy)]
enum Arg {
    Row(usize),
    Imm(u64),
}

#[inline(always)]
fn arg(regs: &[u64], s: Src) -> Arg {
    match s {
        Src::Reg(r) => {
            let at = r as usize * 32;
            assert!(at + 32 <= regs.len(), "register {r} out of range");
            Arg::Row(at)
        }
        Src::Imm(v) => Arg::Imm(v),
    }
}

#[inline(always)]
fn row(regs: &[u64], dst: u32) -> usize {
    let at = dst as usize * 32;
    assert!(at + 32 <= regs.len(), "register {dst} out of range");
    at
}

/// `dst = f(a, b, c)` over the active lanes.
#[inline(always)]
pub fn apply3(
    regs: &mut [u64],
    active: u32,
    dst: u32,
    a: Src,
    b: Src,
    c: Src,
    f: impl Fn(u64, u64, u64) -> u64,
) {
    let (a, b, c, d) = (arg(regs, a), arg(regs, b), arg(regs, c), row(regs, dst));
    let p = regs.as_mut_ptr();
    let at = |x: Arg, l: usize| match x {
        // SAFETY: `arg` checked that the row lies inside `regs`, and l < 32.
        Arg::Row(o) => unsafe { *p.add(o + l) },
        Arg::Imm(v) => v,
    };
    lanes(active, |l| {
        let v = f(at(a, l), at(b, l), at(c, l));
        // SAFETY: `row` checked the destination row; lane l is written after lane l of every
        // source was read, so a destination that is also a source is fine.
        unsafe { *p.add(d + l) = v };
    });
}

#[inline(always)]
pub fn apply2(
    regs: &mut [u64],
    active: u32,
    dst: u32,
    a: Src,
    b: Src,
    f: impl Fn(u64, u64) -> u64,
) {
    apply3(regs, active, dst, a, b, Src::Imm(0), |x, y, _| f(x, y));
}

#[inline(always)]
pub fn apply1(regs: &mut [u64], active: u32, dst: u32, a: Src, f: impl Fn(u64) -> u64) {
    apply3(regs, active, dst, a, Src::Imm(0), Src::Imm(0), |x, _, _| {
        f(x)
    });
}

/// Integer operations, with the common ones specialised outside the lane loop.
pub fn int_op(regs: &mut [u64], active: u32, op: IntOp, ty: Ty, dst: u32, a: Src, b: Src) {
    let m = ty.mask();
    let bits = ty.bits() as u64;
    match op {
        IntOp::Add => apply2(regs, active, dst, a, b, |x, y| x.wrapping_add(y) & m),
        IntOp::Sub => apply2(regs, active, dst, a, b, |x, y| x.wrapping_sub(y) & m),
        IntOp::MulLo => apply2(regs, active, dst, a, b, |x, y| x.wrapping_mul(y) & m),
        IntOp::And => apply2(regs, active, dst, a, b, |x, y| x & y & m),
        IntOp::Or => apply2(regs, active, dst, a, b, |x, y| (x | y) & m),
        IntOp::Xor => apply2(regs, active, dst, a, b, |x, y| (x ^ y) & m),
        IntOp::Shl => apply2(regs, active, dst, a, b, |x, y| {
            let y = y & 0xffff_ffff;
            if y >= bits {
                0
            } else {
                (x << y) & m
            }
        }),
        IntOp::Shr if !ty.signed() => apply2(regs, active, dst, a, b, |x, y| {
            let y = y & 0xffff_ffff;
            if y >= bits {
                0
            } else {
                (x & m) >> y
            }
        }),
        IntOp::Min if !ty.signed() => apply2(regs, active, dst, a, b, |x, y| (x & m).min(y & m)),
        IntOp::Max if !ty.signed() => apply2(regs, active, dst, a, b, |x, y| (x & m).max(y & m)),
        _ => apply2(regs, active, dst, a, b, |x, y| alu::int(op, ty, x, y)),
    }
}

/// `dst = (a cmp b)` as 0/1, with integer comparisons specialised.
pub fn compare(regs: &mut [u64], active: u32, cmp: Cmp, ty: Ty, dst: u32, a: Src, b: Src) {
    if ty.float() {
        return apply2(regs, active, dst, a, b, |x, y| {
            alu::compare(cmp, ty, x, y) as u64
        });
    }
    let m = ty.mask();
    let bits = ty.bits();
    // Signed values compare as their sign-extension; equality needs no extension.
    let key = move |x: u64| {
        if ty.signed() {
            (alu::sext(x, bits) as u64) ^ (1 << 63)
        } else {
            x & m
        }
    };
    match cmp {
        Cmp::Eq => apply2(regs, active, dst, a, b, |x, y| (x & m == y & m) as u64),
        Cmp::Ne => apply2(regs, active, dst, a, b, |x, y| (x & m != y & m) as u64),
        Cmp::Lt => apply2(regs, active, dst, a, b, |x, y| (key(x) < key(y)) as u64),
        Cmp::Le => apply2(regs, active, dst, a, b, |x, y| (key(x) <= key(y)) as u64),
        Cmp::Gt => apply2(regs, active, dst, a, b, |x, y| (key(x) > key(y)) as u64),
        Cmp::Ge => apply2(regs, active, dst, a, b, |x, y| (key(x) >= key(y)) as u64),
        _ => apply2(regs, active, dst, a, b, |x, y| {
            alu::compare(cmp, ty, x, y) as u64
        }),
    }
}

//! Integer opcodes against known results: wraparound at 16/32/64 bits, shift counts at and past
//! the width, signed against unsigned, bit counting, comparisons, conversions between integer
//! types, packing, predication and the front end's refusals.
//!
//! Hand-written tables (one case a line, kept out of rustfmt) hold the edge cases from the PTX
//! ISA; the sweeps run every pair of a width's edge values and compute the expected result with
//! Rust's integer std.

mod common;
use common::{check, check_table, parse_error, refused, Case};

fn mask(bits: u32) -> u64 {
    u64::MAX >> (64 - bits)
}

/// Sign-extends the low `bits` of `v`.
fn sx(v: u64, bits: u32) -> i64 {
    ((v << (64 - bits)) as i64) >> (64 - bits)
}

/// A width's edge values: 0, 1, the signed limits and their neighbours, all ones, two patterns.
fn edges(bits: u32) -> Vec<u64> {
    let (m, h) = (mask(bits), 1u64 << (bits - 1));
    let mut v = vec![0, 1, 2, 3, h - 1, h, h + 1, m - 1, m];
    v.extend([0x1234_5678_9abc_def0 & m, 0xdead_beef_cafe_f00d & m]);
    v
}

/// `op %d, %a, %b;` over every pair of `a_vals` x `b_vals` where `f` gives a result.
fn sweep(op: &str, sig: &str, a_vals: &[u64], b_vals: &[u64], f: impl Fn(u64, u64) -> Option<u64>) {
    let cases: Vec<(Vec<u64>, Vec<u64>)> = a_vals
        .iter()
        .flat_map(|&a| b_vals.iter().map(move |&b| (a, b)))
        .filter_map(|(a, b)| f(a, b).map(|r| (vec![a, b], vec![r])))
        .collect();
    check(&format!("{op} %d, %a, %b;"), sig, &cases);
}

/// `sweep` of a same-width binary op whose expected value is a Rust expression over `$t`.
macro_rules! sweep {
    ($op:expr, $t:ty, |$x:ident, $y:ident| $e:expr) => {{
        let bits = <$t>::BITS;
        let sig = format!("b{bits} = b{bits} b{bits}");
        sweep($op, &sig, &edges(bits), &edges(bits), |a, b| {
            let ($x, $y) = (a as $t, b as $t);
            let r: Option<$t> = $e;
            r.map(|r| r as u64 & mask(bits))
        })
    }};
}

#[test]
fn add_sub_wrap_at_width() {
    #[rustfmt::skip]
    let table: &[Case] = &[
        ("add.s32 %d, %a, %b;", "b32 = b32 b32", &[0x7fff_ffff, 1], &[0x8000_0000]),
        ("add.s32 %d, %a, %b;", "b32 = b32 b32", &[0xffff_ffff, 1], &[0]),
        ("add.s32 %d, %a, %b;", "b32 = b32 b32", &[0x8000_0000, 0x8000_0000], &[0]),
        ("sub.u16 %d, %a, %b;", "b16 = b16 b16", &[0, 1], &[0xffff]),
        ("sub.u16 %d, %a, %b;", "b16 = b16 b16", &[0x8000, 1], &[0x7fff]),
        ("add.u64 %d, %a, %b;", "b64 = b64 b64", &[u64::MAX, 1], &[0]),
        ("add.u64 %d, %a, %b;", "b64 = b64 b64", &[i64::MAX as u64, 1], &[1 << 63]),
    ];
    check_table(table);
    sweep!("add.s16", i16, |x, y| Some(x.wrapping_add(y)));
    sweep!("add.u32", u32, |x, y| Some(x.wrapping_add(y)));
    sweep!("add.s64", i64, |x, y| Some(x.wrapping_add(y)));
    sweep!("sub.s32", i32, |x, y| Some(x.wrapping_sub(y)));
    sweep!("sub.u64", u64, |x, y| Some(x.wrapping_sub(y)));
}

#[test]
fn mul_lo_hi_signed_and_unsigned() {
    #[rustfmt::skip]
    let table: &[Case] = &[
        ("mul.hi.s32 %d, %a, %b;", "b32 = b32 b32", &[0xffff_ffff, 0xffff_ffff], &[0]), // -1*-1
        ("mul.hi.s32 %d, %a, %b;", "b32 = b32 b32", &[0xffff_ffff, 1], &[0xffff_ffff]),
        ("mul.hi.s32 %d, %a, %b;", "b32 = b32 b32", &[0x8000_0000, 0x8000_0000], &[0x4000_0000]),
        ("mul.hi.u32 %d, %a, %b;", "b32 = b32 b32", &[0xffff_ffff, 0xffff_ffff], &[0xffff_fffe]),
        ("mul.hi.u32 %d, %a, %b;", "b32 = b32 b32", &[0x8000_0000, 2], &[1]),
    ];
    check_table(table);
    sweep!("mul.lo.s16", i16, |x, y| Some(x.wrapping_mul(y)));
    sweep!("mul.lo.u32", u32, |x, y| Some(x.wrapping_mul(y)));
    sweep!("mul.lo.s64", i64, |x, y| Some(x.wrapping_mul(y)));
    sweep!("mul.hi.s16", i16, |x, y| Some(
        ((x as i32 * y as i32) >> 16) as i16
    ));
    sweep!("mul.hi.u16", u16, |x, y| Some(
        ((x as u32 * y as u32) >> 16) as u16
    ));
    sweep!("mul.hi.s32", i32, |x, y| Some(
        ((x as i64 * y as i64) >> 32) as i32
    ));
    sweep!("mul.hi.u32", u32, |x, y| Some(
        ((x as u64 * y as u64) >> 32) as u32
    ));
    sweep!("mul.hi.s64", i64, |x, y| Some(
        ((x as i128 * y as i128) >> 64) as i64
    ));
    sweep!("mul.hi.u64", u64, |x, y| Some(
        ((x as u128 * y as u128) >> 64) as u64
    ));
}

#[test]
fn mul_wide_and_mad() {
    let (e16, e32) = (edges(16), edges(32));
    let (w16, w32) = ("b32 = b16 b16", "b64 = b32 b32");
    sweep("mul.wide.s16", w16, &e16, &e16, |a, b| {
        Some((sx(a, 16) * sx(b, 16)) as u64 & mask(32))
    });
    sweep("mul.wide.u16", w16, &e16, &e16, |a, b| Some(a * b));
    sweep("mul.wide.s32", w32, &e32, &e32, |a, b| {
        Some((sx(a, 32) * sx(b, 32)) as u64)
    });
    sweep("mul.wide.u32", w32, &e32, &e32, |a, b| Some(a * b));
    let (lo32, wide32) = ("b32 = b32 b32 b32", "b64 = b32 b32 b64");
    #[rustfmt::skip]
    let table: &[Case] = &[
        ("mad.lo.s32 %d, %a, %b, %c;", lo32, &[3, 0xffff_fffc, 5], &[0xffff_fff9]), // 3*-4+5
        ("mad.lo.s32 %d, %a, %b, %c;", lo32, &[0x1_0000, 0x1_0000, 1], &[1]),
        ("mad.lo.s32 %d, %a, %b, %c;", lo32, &[0x7fff_ffff, 2, 2], &[0]),
        ("mad.hi.u32 %d, %a, %b, %c;", lo32, &[0xffff_ffff, 0xffff_ffff, 2], &[0]), // wraps
        ("mad.hi.u32 %d, %a, %b, %c;", lo32, &[0x8000_0000, 4, 5], &[7]),
        ("mad.hi.s32 %d, %a, %b, %c;", lo32, &[0xffff_ffff, 1, 0], &[0xffff_ffff]),
        ("mad.hi.s32 %d, %a, %b, %c;", lo32, &[0xffff_ffff, 1, 1], &[0]),
        ("mad.lo.u64 %d, %a, %b, %c;", "b64 = b64 b64 b64", &[u64::MAX, u64::MAX, 5], &[6]),
        ("mad.hi.u64 %d, %a, %b, %c;", "b64 = b64 b64 b64", &[u64::MAX, u64::MAX, 1], &[u64::MAX]),
        ("mad.wide.s32 %d, %a, %b, %c;", wide32, &[0xffff_ffff, 1, 0], &[u64::MAX]),
        ("mad.wide.s32 %d, %a, %b, %c;", wide32, &[0x8000_0000, 2, 1 << 32], &[0]),
        ("mad.wide.s32 %d, %a, %b, %c;", wide32, &[0x7fff_ffff, 0x7fff_ffff, 0], &[0x3fff_ffff_0000_0001]),
        ("mad.wide.u32 %d, %a, %b, %c;", wide32, &[0xffff_ffff, 0xffff_ffff, u64::MAX], &[0xffff_fffe_0000_0000]),
        ("mad.wide.u32 %d, %a, %b, %c;", wide32, &[0xffff_ffff, 2, 3], &[0x2_0000_0001]),
        ("mad.wide.s16 %d, %a, %b, %c;", "b32 = b16 b16 b32", &[0x8000, 0x8000, 0], &[0x4000_0000]),
        ("mad.wide.s16 %d, %a, %b, %c;", "b32 = b16 b16 b32", &[0xffff, 2, 0], &[0xffff_fffe]),
        ("mad.wide.u16 %d, %a, %b, %c;", "b32 = b16 b16 b32", &[0xffff, 0xffff, 1], &[0xfffe_0002]),
    ];
    check_table(table);
}

#[test]
fn shifts_by_width_or_more() {
    #[rustfmt::skip]
    let table: &[Case] = &[
        ("shr.s32 %d, %a, %b;", "b32 = b32 b32", &[0x8000_0000, 31], &[0xffff_ffff]),
        ("shr.s32 %d, %a, %b;", "b32 = b32 b32", &[0x8000_0000, 32], &[0xffff_ffff]), // sign fill
        ("shr.s32 %d, %a, %b;", "b32 = b32 b32", &[0x8000_0000, 0xffff_ffff], &[0xffff_ffff]),
        ("shr.s32 %d, %a, %b;", "b32 = b32 b32", &[0x7fff_ffff, 40], &[0]),
        ("shr.u32 %d, %a, %b;", "b32 = b32 b32", &[0x8000_0000, 32], &[0]),
        ("shl.b32 %d, %a, 33;", "b32 = b32", &[0xffff_ffff], &[0]),
        ("shl.b64 %d, %a, %b;", "b64 = b64 b32", &[1, 63], &[1 << 63]),
        ("shl.b64 %d, %a, %b;", "b64 = b64 b32", &[1, 64], &[0]),
        ("shr.s16 %d, %a, %b;", "b16 = b16 b32", &[0x8000, 16], &[0xffff]),
    ];
    check_table(table);
    for bits in [16u32, 32, 64] {
        let w = bits as u64;
        let counts = [0u64, 1, w - 1, w, w + 1, 255, 0xffff_ffff];
        let (e, sig) = (edges(bits), format!("b{bits} = b{bits} b32"));
        let shl = |a: u64, s: u64| Some(if s < w { (a << s) & mask(bits) } else { 0 });
        let shr = |a: u64, s: u64| Some(if s < w { a >> s } else { 0 });
        let sar = |a: u64, s: u64| Some((sx(a, bits) >> s.min(63)) as u64 & mask(bits));
        sweep(&format!("shl.b{bits}"), &sig, &e, &counts, shl);
        sweep(&format!("shr.u{bits}"), &sig, &e, &counts, shr);
        sweep(&format!("shr.b{bits}"), &sig, &e, &counts, shr);
        sweep(&format!("shr.s{bits}"), &sig, &e, &counts, sar);
    }
}

/// `op %d, %a;` over a width's edge values.
fn unary(op: &str, sig: &str, bits: u32, f: impl Fn(u64) -> u64) {
    let cases: Vec<_> = edges(bits)
        .into_iter()
        .map(|v| (vec![v], vec![f(v)]))
        .collect();
    check(&format!("{op} %d, %a;"), sig, &cases);
}

#[test]
fn bitwise_and_bit_counting() {
    sweep!("and.b32", u32, |x, y| Some(x & y));
    sweep!("or.b16", u16, |x, y| Some(x | y));
    sweep!("xor.b64", u64, |x, y| Some(x ^ y));
    for bits in [16u32, 32, 64] {
        let (same, count) = (format!("b{bits} = b{bits}"), format!("b32 = b{bits}"));
        let lz = |v: u64| (v.leading_zeros() - (64 - bits)) as u64;
        unary(&format!("not.b{bits}"), &same, bits, |v| !v & mask(bits));
        if bits == 16 {
            continue; // popc, clz, brev and bfind take 32 and 64 bits only
        }
        unary(&format!("popc.b{bits}"), &count, bits, |v| {
            v.count_ones() as u64
        });
        unary(&format!("clz.b{bits}"), &count, bits, lz);
        unary(&format!("brev.b{bits}"), &same, bits, |v| {
            v.reverse_bits() >> (64 - bits)
        });
        // bfind: the position of the most significant set bit (for .s, of the most significant
        // bit unlike the sign), 0xffffffff when there is none; .shiftamt gives bits-1-pos.
        let msb = |v: u64| {
            if v == 0 {
                0xffff_ffff
            } else {
                bits as u64 - 1 - lz(v)
            }
        };
        let smsb = |v: u64| msb(if sx(v, bits) < 0 { !v & mask(bits) } else { v });
        let amt = |p: u64| {
            if p == 0xffff_ffff {
                p
            } else {
                bits as u64 - 1 - p
            }
        };
        unary(&format!("bfind.u{bits}"), &count, bits, msb);
        unary(&format!("bfind.s{bits}"), &count, bits, smsb);
        unary(&format!("bfind.shiftamt.u{bits}"), &count, bits, |v| {
            amt(msb(v))
        });
        unary(&format!("bfind.shiftamt.s{bits}"), &count, bits, |v| {
            amt(smsb(v))
        });
    }
    // Hand-written anchors for the tables computed above.
    #[rustfmt::skip]
    let table: &[Case] = &[
        ("bfind.u32 %d, %a;", "b32 = b32", &[0], &[0xffff_ffff]),
        ("bfind.u32 %d, %a;", "b32 = b32", &[0x8000_0000], &[31]),
        ("bfind.s32 %d, %a;", "b32 = b32", &[0xffff_ffff], &[0xffff_ffff]),
        ("bfind.s32 %d, %a;", "b32 = b32", &[0x8000_0000], &[30]),
        ("bfind.s32 %d, %a;", "b32 = b32", &[0x0001_0000], &[16]),
        ("bfind.shiftamt.u32 %d, %a;", "b32 = b32", &[1], &[31]),
        ("bfind.shiftamt.u32 %d, %a;", "b32 = b32", &[0], &[0xffff_ffff]),
        ("bfind.u64 %d, %a;", "b32 = b64", &[1 << 40], &[40]),
        ("brev.b32 %d, %a;", "b32 = b32", &[0x1234_5678], &[0x1e6a_2c48]),
        ("clz.b64 %d, %a;", "b32 = b64", &[0], &[64]),
        ("clz.b64 %d, %a;", "b32 = b64", &[1 << 32], &[31]),
        ("popc.b64 %d, %a;", "b32 = b64", &[u64::MAX], &[64]),
    ];
    check_table(table);
}

#[test]
fn neg_abs_min_max() {
    #[rustfmt::skip]
    let table: &[Case] = &[
        ("neg.s32 %d, %a;", "b32 = b32", &[0x8000_0000], &[0x8000_0000]),
        ("neg.s32 %d, %a;", "b32 = b32", &[1], &[0xffff_ffff]),
        ("abs.s32 %d, %a;", "b32 = b32", &[0x8000_0000], &[0x8000_0000]),
        ("abs.s32 %d, %a;", "b32 = b32", &[0xffff_ffff], &[1]),
        ("abs.s16 %d, %a;", "b16 = b16", &[0x8000], &[0x8000]),
        ("abs.s16 %d, %a;", "b16 = b16", &[0xfffe], &[2]),
        ("neg.s64 %d, %a;", "b64 = b64", &[1 << 63], &[1 << 63]),
        ("min.s32 %d, %a, %b;", "b32 = b32 b32", &[0xffff_ffff, 1], &[0xffff_ffff]),
        ("min.u32 %d, %a, %b;", "b32 = b32 b32", &[0xffff_ffff, 1], &[1]),
    ];
    check_table(table);
    sweep!("min.s16", i16, |x, y| Some(x.min(y)));
    sweep!("min.u16", u16, |x, y| Some(x.min(y)));
    sweep!("max.s32", i32, |x, y| Some(x.max(y)));
    sweep!("max.u32", u32, |x, y| Some(x.max(y)));
    sweep!("min.s64", i64, |x, y| Some(x.min(y)));
    sweep!("max.u64", u64, |x, y| Some(x.max(y)));
}

#[test]
fn div_rem_and_the_documented_division_by_zero() {
    #[rustfmt::skip]
    let table: &[Case] = &[
        ("div.s32 %d, %a, %b;", "b32 = b32 b32", &[0xffff_fff9, 2], &[0xffff_fffd]), // -7/2 = -3
        ("div.s32 %d, %a, %b;", "b32 = b32 b32", &[0x8000_0000, 0xffff_ffff], &[0x8000_0000]),
        ("rem.s32 %d, %a, %b;", "b32 = b32 b32", &[0xffff_fff9, 2], &[0xffff_ffff]), // -7%2 = -1
        ("rem.s32 %d, %a, %b;", "b32 = b32 b32", &[7, 0xffff_fffe], &[1]),
        // PTX leaves division by zero unspecified; exec/alu.rs documents all ones for a
        // quotient (what the GPU gives) and the dividend for a remainder.
        ("div.u32 %d, %a, %b;", "b32 = b32 b32", &[5, 0], &[0xffff_ffff]),
        ("div.s64 %d, %a, %b;", "b64 = b64 b64", &[5, 0], &[u64::MAX]),
        ("rem.u32 %d, %a, %b;", "b32 = b32 b32", &[5, 0], &[5]),
    ];
    check_table(table);
    sweep!("div.s32", i32, |x, y| (y != 0).then(|| x.wrapping_div(y)));
    sweep!("rem.s32", i32, |x, y| (y != 0).then(|| x.wrapping_rem(y)));
    sweep!("div.u16", u16, |x, y| x.checked_div(y));
    sweep!("rem.s16", i16, |x, y| (y != 0).then(|| x.wrapping_rem(y)));
    sweep!("div.u64", u64, |x, y| x.checked_div(y));
    sweep!("rem.s64", i64, |x, y| (y != 0).then(|| x.wrapping_rem(y)));
}

#[test]
fn setp_every_integer_comparison() {
    type Cmp = fn(std::cmp::Ordering) -> bool;
    let cmps: [(&str, &str, Cmp); 6] = [
        ("eq", "eq", |o| o.is_eq()),
        ("ne", "ne", |o| o.is_ne()),
        ("lt", "lo", |o| o.is_lt()),
        ("le", "ls", |o| o.is_le()),
        ("gt", "hi", |o| o.is_gt()),
        ("ge", "hs", |o| o.is_ge()),
    ];
    for bits in [16u32, 32, 64] {
        let (e, sig) = (edges(bits), format!("pred = b{bits} b{bits}"));
        for (name, alias, f) in cmps {
            let s = |a: u64, b: u64| Some(f(sx(a, bits).cmp(&sx(b, bits))) as u64);
            let u = |a: u64, b: u64| Some(f(a.cmp(&b)) as u64);
            sweep(&format!("setp.{name}.s{bits}"), &sig, &e, &e, s);
            sweep(&format!("setp.{name}.u{bits}"), &sig, &e, &e, u);
            sweep(&format!("setp.{alias}.u{bits}"), &sig, &e, &e, u);
        }
    }
    #[rustfmt::skip]
    let table: &[Case] = &[
        ("setp.lt.s32 %d, %a, %b;", "pred = b32 b32", &[0xffff_ffff, 1], &[1]), // -1 < 1
        ("setp.lt.u32 %d, %a, %b;", "pred = b32 b32", &[0xffff_ffff, 1], &[0]),
    ];
    check_table(table);
}

#[test]
fn setp_second_destination_and_combine() {
    // p = (a < b) op c; q = !(a < b) op c.
    let sig = "pred pred = b32 b32 pred";
    #[rustfmt::skip]
    let table: &[Case] = &[
        ("setp.lt.s32 %d|%e, %a, %b;", "pred pred = b32 b32", &[1, 2], &[1, 0]),
        ("setp.lt.s32 %d|%e, %a, %b;", "pred pred = b32 b32", &[2, 1], &[0, 1]),
        ("setp.lt.and.s32 %d|%e, %a, %b, %c;", sig, &[1, 2, 1], &[1, 0]),
        ("setp.lt.and.s32 %d|%e, %a, %b, %c;", sig, &[1, 2, 0], &[0, 0]),
        ("setp.lt.and.s32 %d|%e, %a, %b, %c;", sig, &[2, 1, 1], &[0, 1]),
        ("setp.lt.or.s32 %d|%e, %a, %b, %c;", sig, &[1, 2, 0], &[1, 0]),
        ("setp.lt.or.s32 %d|%e, %a, %b, %c;", sig, &[2, 1, 0], &[0, 1]),
        ("setp.lt.or.s32 %d|%e, %a, %b, %c;", sig, &[2, 1, 1], &[1, 1]),
        ("setp.lt.xor.s32 %d|%e, %a, %b, %c;", sig, &[1, 2, 1], &[0, 1]),
        ("setp.lt.xor.s32 %d|%e, %a, %b, %c;", sig, &[2, 1, 0], &[0, 1]),
        ("setp.ne.and.u32 %d, %a, %b, !%c;", "pred = b32 b32 pred", &[1, 2, 0], &[1]),
        ("setp.ne.and.u32 %d, %a, %b, !%c;", "pred = b32 b32 pred", &[1, 2, 1], &[0]),
    ];
    check_table(table);
}

#[test]
fn selp_predicate_logic_and_guards() {
    let guarded = "mov.b32 %d, %a;\n@%c mov.b32 %d, %b;\n@!%c add.s32 %d, %d, 100;";
    #[rustfmt::skip]
    let table: &[Case] = &[
        ("selp.b32 %d, %a, %b, %c;", "b32 = b32 b32 pred", &[7, 9, 1], &[7]),
        ("selp.b32 %d, %a, %b, %c;", "b32 = b32 b32 pred", &[7, 9, 0], &[9]),
        ("selp.b64 %d, %a, %b, !%c;", "b64 = b64 b64 pred", &[u64::MAX, 1, 1], &[1]),
        ("selp.b64 %d, %a, %b, !%c;", "b64 = b64 b64 pred", &[u64::MAX, 1, 0], &[u64::MAX]),
        (guarded, "b32 = b32 b32 pred", &[1, 2, 1], &[2]),
        (guarded, "b32 = b32 b32 pred", &[1, 2, 0], &[101]),
        ("and.pred %d, %a, %b;", "pred = pred pred", &[1, 0], &[0]),
        ("and.pred %d, %a, %b;", "pred = pred pred", &[1, 1], &[1]),
        ("or.pred %d, %a, %b;", "pred = pred pred", &[0, 1], &[1]),
        ("or.pred %d, %a, %b;", "pred = pred pred", &[0, 0], &[0]),
        ("xor.pred %d, %a, %b;", "pred = pred pred", &[1, 1], &[0]),
        ("xor.pred %d, %a, %b;", "pred = pred pred", &[1, 0], &[1]),
        ("not.pred %d, %a;", "pred = pred", &[1], &[0]),
        ("not.pred %d, %a;", "pred = pred", &[0], &[1]),
    ];
    check_table(table);
}

#[test]
fn cvt_between_integer_types() {
    // Extension follows the source type's signedness; narrowing truncates.
    #[rustfmt::skip]
    let table: &[Case] = &[
        ("cvt.s64.s32 %d, %a;", "b64 = b32", &[0xffff_ffff], &[u64::MAX]),
        ("cvt.s64.s32 %d, %a;", "b64 = b32", &[0x7fff_ffff], &[0x7fff_ffff]),
        ("cvt.u64.s32 %d, %a;", "b64 = b32", &[0x8000_0000], &[0xffff_ffff_8000_0000]),
        ("cvt.u64.u32 %d, %a;", "b64 = b32", &[0xffff_ffff], &[0xffff_ffff]),
        ("cvt.s64.u32 %d, %a;", "b64 = b32", &[0xffff_ffff], &[0xffff_ffff]),
        ("cvt.s64.s16 %d, %a;", "b64 = b16", &[0xfffe], &[u64::MAX - 1]),
        ("cvt.u32.u64 %d, %a;", "b32 = b64", &[0x1_2345_6789], &[0x2345_6789]),
        ("cvt.s32.s64 %d, %a;", "b32 = b64", &[0xffff_ffff_0000_0001], &[1]),
        ("cvt.s32.s16 %d, %a;", "b32 = b16", &[0x8000], &[0xffff_8000]),
        ("cvt.u32.u16 %d, %a;", "b32 = b16", &[0x8000], &[0x8000]),
        ("cvt.s32.s8 %d, %a;", "b32 = b16", &[0x0080], &[0xffff_ff80]),
        ("cvt.u32.u8 %d, %a;", "b32 = b16", &[0x01ff], &[0xff]),
        ("cvt.s32.u8 %d, %a;", "b32 = b16", &[0x0080], &[0x80]),
        ("cvt.u16.u32 %d, %a;", "b16 = b32", &[0x1_2345], &[0x2345]),
        ("cvt.s16.s32 %d, %a;", "b16 = b32", &[0xffff_8000], &[0x8000]),
    ];
    check_table(table);
}

#[test]
fn mov_pack_and_unpack() {
    #[rustfmt::skip]
    let table: &[Case] = &[
        ("mov.b64 %d, {%a, %b};", "b64 = b32 b32", &[0x1111_1111, 0x2222_2222], &[0x2222_2222_1111_1111]),
        ("mov.b64 {%d, %e}, %a;", "b32 b32 = b64", &[0x2222_2222_1111_1111], &[0x1111_1111, 0x2222_2222]),
        ("mov.b32 %d, {%a, %b};", "b32 = b16 b16", &[0x1234, 0xabcd], &[0xabcd_1234]),
        ("mov.b32 {%d, %e}, %a;", "b16 b16 = b32", &[0xabcd_1234], &[0x1234, 0xabcd]),
        ("mov.b64 {_, %d}, %a;", "b32 = b64", &[0xdead_beef_0000_0001], &[0xdead_beef]),
        ("mov.u16 %d, 0xffff;", "b16 =", &[], &[0xffff]),
        ("mov.s32 %d, -2;", "b32 =", &[], &[0xffff_fffe]),
        ("mov.u64 %d, -1;", "b64 =", &[], &[u64::MAX]),
    ];
    check_table(table);
}

#[test]
fn unsupported_opcodes_and_modifiers_are_named() {
    refused(&[
        "frobnicate.b32 %r1, %r2;",
        "add.sat.s32 %r1, %r2, %r3;", // valid PTX, but not modelled: refused, not approximated
        "mul.s32 %r1, %r2, %r3;",     // an integer mul must say .lo, .hi or .wide
        "cnot.b32 %r1, %r2;",
        "setp.equ.s32 %p1, %r1, %r2;", // unordered comparisons exist only for floats
        "bar.arrive 0;",
        "shfl.up.b32 %r1, %r2, 1, 0;", // the pre-Volta form without .sync
    ]);
}

#[test]
fn mul_wide_of_64_bits_is_refused() {
    refused(&[
        "mul.wide.u64 %rd1, %rd2, %rd3;",
        "mul.wide.s64 %rd1, %rd2, %rd3;",
    ]);
}

#[test]
fn a_bad_operand_is_reported_at_its_line() {
    let (e, line) = parse_error("mov.u32 %r1, 1;\nadd.s32 %r1, %nope, 1;\n", "%nope");
    assert_eq!((e.line, e.token.as_str()), (line, "add.s32"), "{e}");
    assert!(e.reason.contains("%nope"), "{e}");
}

#[test]
fn an_unsupported_instruction_is_reported_at_its_line() {
    let body = "mov.u32 %r1, 1;\nadd.sat.s32 %r1, %r1, 1;\nmov.u32 %r2, 2;\n";
    let (e, line) = parse_error(body, "sat");
    assert_eq!((e.line, e.token.as_str()), (line, "add.sat.s32"), "{e}");
}

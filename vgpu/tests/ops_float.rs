//! Floating-point opcodes bit for bit against Rust's IEEE arithmetic (round to nearest even):
//! add/sub/mul/div.rn/sqrt.rn/fma.rn in f32 and f64 over a grid of edge values (±0, subnormals,
//! ±MAX, ±inf, NaNs), min/max, every comparison including the unordered ones, conversions, and
//! the refusal of what the interpreter cannot do exactly (approximate, flush-to-zero, directed
//! rounding).
//!
//! A NaN result is the canonical NaN `exec/alu.rs` documents (0x7fffffff, 0x7fffffffffffffff,
//! what NVIDIA GPUs give); PTX itself leaves NaN payloads unspecified.

mod common;
use common::{check, check_table, f32b, f64b, refused, Case, NAN32, NAN64};

/// f32 edge values: ±0, ±1, 1.5, 3, 0.1, 1/3, -1e-30, 2^24, MIN_POSITIVE, ±MAX, ±inf, a quiet
/// NaN, a negative NaN with payload, a signalling NaN, the least and greatest subnormals, -least.
#[rustfmt::skip]
const E32: &[u64] = &[
    0x0000_0000, 0x8000_0000, 0x3f80_0000, 0xbf80_0000, 0x3fc0_0000, 0x4040_0000, 0x3dcc_cccd,
    0x3eaa_aaab, 0x8da2_4260, 0x4b80_0000, 0x0080_0000, 0x7f7f_ffff, 0xff7f_ffff, 0x7f80_0000,
    0xff80_0000, 0x7fc0_0000, 0xffc0_0001, 0x7f80_0001, 0x0000_0001, 0x007f_ffff, 0x8000_0001,
];

/// f64 edge values, the same kinds as `E32`.
#[rustfmt::skip]
const E64: &[u64] = &[
    0x0000_0000_0000_0000, 0x8000_0000_0000_0000, 0x3ff0_0000_0000_0000, 0xbff0_0000_0000_0000,
    0x3ff8_0000_0000_0000, 0x4008_0000_0000_0000, 0x3fb9_9999_9999_999a, 0x3fd5_5555_5555_5555,
    0x81a5_6e1f_c2f8_f359, 0x4340_0000_0000_0000, 0x0010_0000_0000_0000, 0x7fef_ffff_ffff_ffff,
    0xffef_ffff_ffff_ffff, 0x7ff0_0000_0000_0000, 0xfff0_0000_0000_0000, 0x7ff8_0000_0000_0000,
    0xfff8_0000_0000_0001, 0x7ff0_0000_0000_0001, 0x0000_0000_0000_0001, 0x000f_ffff_ffff_ffff,
];

fn f32_of(v: u64) -> f32 {
    f32::from_bits(v as u32)
}

fn f64_of(v: u64) -> f64 {
    f64::from_bits(v)
}

/// `line` over every pair of `values` (bits); `f` gives the expected destination bits.
fn grid(line: &str, sig: &str, values: &[u64], f: impl Fn(u64, u64) -> u64) {
    let mut cases = Vec::new();
    for &a in values {
        cases.extend(values.iter().map(|&b| (vec![a, b], vec![f(a, b)])));
    }
    check(line, sig, &cases);
}

/// One-source instructions over `inputs` (bits): `(line, signature, expected bits)`.
type Unary = (&'static str, &'static str, fn(u64) -> u64);

fn each(inputs: &[u64], table: &[Unary]) {
    for &(line, sig, f) in table {
        let cases: Vec<_> = inputs.iter().map(|&v| (vec![v], vec![f(v)])).collect();
        check(line, sig, &cases);
    }
}

#[test]
fn arithmetic_is_ieee_round_to_nearest_even() {
    type Binary = (&'static str, fn(u64, u64) -> u64);
    #[rustfmt::skip]
    let ops32: &[Binary] = &[
        ("add.rn.f32 %d, %a, %b;", |a, b| f32b(f32_of(a) + f32_of(b))),
        ("add.f32 %d, %a, %b;", |a, b| f32b(f32_of(a) + f32_of(b))),
        ("sub.rn.f32 %d, %a, %b;", |a, b| f32b(f32_of(a) - f32_of(b))),
        ("mul.rn.f32 %d, %a, %b;", |a, b| f32b(f32_of(a) * f32_of(b))),
        ("mul.f32 %d, %a, %b;", |a, b| f32b(f32_of(a) * f32_of(b))),
        ("div.rn.f32 %d, %a, %b;", |a, b| f32b(f32_of(a) / f32_of(b))),
    ];
    #[rustfmt::skip]
    let ops64: &[Binary] = &[
        ("add.rn.f64 %d, %a, %b;", |a, b| f64b(f64_of(a) + f64_of(b))),
        ("sub.f64 %d, %a, %b;", |a, b| f64b(f64_of(a) - f64_of(b))),
        ("mul.rn.f64 %d, %a, %b;", |a, b| f64b(f64_of(a) * f64_of(b))),
        ("div.rn.f64 %d, %a, %b;", |a, b| f64b(f64_of(a) / f64_of(b))),
    ];
    for &(line, f) in ops32 {
        grid(line, "f32 = f32 f32", E32, f);
    }
    for &(line, f) in ops64 {
        grid(line, "f64 = f64 f64", E64, f);
    }
    #[rustfmt::skip]
    each(E32, &[("sqrt.rn.f32 %d, %a;", "f32 = f32", |v| f32b(f32_of(v).sqrt()))]);
    #[rustfmt::skip]
    each(E64, &[("sqrt.rn.f64 %d, %a;", "f64 = f64", |v| f64b(f64_of(v).sqrt()))]);
    // Hand-written anchors: ties to even, subnormals kept (no flush), canonical NaN.
    let (a32, a64) = ("f32 = f32 f32", "f64 = f64 f64");
    #[rustfmt::skip]
    let table: &[Case] = &[
        ("add.rn.f32 %d, %a, %b;", a32, &[0x3f80_0000, 0x3380_0000], &[0x3f80_0000]), // 1 + 2^-24: tie, even
        ("add.rn.f32 %d, %a, %b;", a32, &[0x3f80_0001, 0x3380_0000], &[0x3f80_0002]), // tie, up to even
        ("add.rn.f32 %d, %a, %b;", a32, &[1, 1], &[2]),                               // subnormals add
        ("add.rn.f32 %d, %a, %b;", a32, &[0x7f80_0000, 0xff80_0000], &[NAN32 as u64]), // inf - inf
        ("add.rn.f32 %d, %a, %b;", a32, &[0x7f80_0001, 0x3f80_0000], &[NAN32 as u64]), // sNaN in
        ("add.rn.f32 %d, %a, %b;", a32, &[0x7f7f_ffff, 0x7f7f_ffff], &[0x7f80_0000]),  // overflow
        ("mul.rn.f32 %d, %a, %b;", a32, &[0x0080_0000, 0x3f00_0000], &[0x0040_0000]), // MIN_POSITIVE/2
        ("mul.rn.f32 %d, %a, %b;", a32, &[0x0000_0000, 0x7f80_0000], &[NAN32 as u64]), // 0 * inf
        ("mul.rn.f32 %d, %a, %b;", a32, &[0x8000_0000, 0x3f80_0000], &[0x8000_0000]), // -0 * 1
        ("div.rn.f32 %d, %a, %b;", a32, &[0x3f80_0000, 0x4040_0000], &[0x3eaa_aaab]), // 1/3
        ("div.rn.f32 %d, %a, %b;", a32, &[0xbf80_0000, 0x0000_0000], &[0xff80_0000]), // -1/0
        ("div.rn.f32 %d, %a, %b;", a32, &[0x3f80_0000, 0x8000_0000], &[0xff80_0000]), // 1/-0
        ("div.rn.f32 %d, %a, %b;", a32, &[0, 0], &[NAN32 as u64]),
        ("sqrt.rn.f32 %d, %a;", "f32 = f32", &[0x8000_0000], &[0x8000_0000]),         // sqrt(-0)
        ("sqrt.rn.f32 %d, %a;", "f32 = f32", &[0xbf80_0000], &[NAN32 as u64]),
        ("sqrt.rn.f32 %d, %a;", "f32 = f32", &[0x4000_0000], &[0x3fb5_04f3]),
        ("add.rn.f64 %d, %a, %b;", a64, &[0x3fb9_9999_9999_999a, 0x3fc9_9999_9999_999a], &[0x3fd3_3333_3333_3334]),
        ("add.rn.f64 %d, %a, %b;", a64, &[1, 1], &[2]),
        ("sub.rn.f64 %d, %a, %b;", a64, &[0x7ff0_0000_0000_0000, 0x7ff0_0000_0000_0000], &[NAN64]),
        ("mul.rn.f64 %d, %a, %b;", a64, &[0x0010_0000_0000_0000, 0x3fe0_0000_0000_0000], &[0x0008_0000_0000_0000]),
        ("add.rn.f32 %d, %a, 0f3F800000;", "f32 = f32", &[0x3f80_0000], &[0x4000_0000]),
        ("add.rn.f64 %d, %a, 0dBFF0000000000000;", "f64 = f64", &[0], &[0xbff0_0000_0000_0000]),
        ("mov.f32 %d, 0fFF800000;", "f32 =", &[], &[0xff80_0000]),
        ("neg.f32 %d, %a;", "f32 = f32", &[0], &[0x8000_0000]),
        ("neg.f64 %d, %a;", "f64 = f64", &[0x7ff0_0000_0000_0000], &[0xfff0_0000_0000_0000]),
        ("abs.f32 %d, %a;", "f32 = f32", &[0x8000_0001], &[1]),
        ("abs.f64 %d, %a;", "f64 = f64", &[0x8000_0000_0000_0000], &[0]),
    ];
    check_table(table);
}

/// Every triple of `values`, with `f` giving the expected bits.
fn triples(values: &[u64], f: impl Fn(u64, u64, u64) -> u64) -> Vec<(Vec<u64>, Vec<u64>)> {
    let n = values.len();
    (0..n * n * n)
        .map(|i| (values[i / (n * n)], values[i / n % n], values[i % n]))
        .map(|(a, b, c)| (vec![a, b, c], vec![f(a, b, c)]))
        .collect()
}

#[test]
fn fma_rounds_once() {
    // 0, -0, 1, -1.5, 0.1, MIN_POSITIVE, MAX, inf, the least subnormal, NaN.
    #[rustfmt::skip]
    let v32: &[u64] = &[0, 0x8000_0000, 0x3f80_0000, 0xbfc0_0000, 0x3dcc_cccd, 0x0080_0000,
        0x7f7f_ffff, 0x7f80_0000, 1, 0x7fc0_0000];
    let cases = triples(v32, |a, b, c| f32b(f32_of(a).mul_add(f32_of(b), f32_of(c))));
    check("fma.rn.f32 %d, %a, %b, %c;", "f32 = f32 f32 f32", &cases);
    check("mad.rn.f32 %d, %a, %b, %c;", "f32 = f32 f32 f32", &cases);
    let v64: Vec<u64> = (v32.iter()).map(|&v| f64b(f32_of(v) as f64)).collect();
    let cases = triples(&v64, |a, b, c| {
        f64b(f64_of(a).mul_add(f64_of(b), f64_of(c)))
    });
    check("fma.rn.f64 %d, %a, %b, %c;", "f64 = f64 f64 f64", &cases);
    // (1 + 2^-12)^2 - (1 + 2^-11) is 2^-24 exactly (f64: (1 + 2^-27)^2 - (1 + 2^-26) is 2^-54); a
    // rounded product would give 0.
    #[rustfmt::skip]
    let table: &[Case] = &[
        ("fma.rn.f32 %d, %a, %b, %c;", "f32 = f32 f32 f32", &[0x3f80_0800, 0x3f80_0800, 0xbf80_1000], &[0x3380_0000]),
        ("fma.rn.f64 %d, %a, %b, %c;", "f64 = f64 f64 f64",
            &[0x3ff0_0000_0200_0000, 0x3ff0_0000_0200_0000, 0xbff0_0000_0400_0000], &[0x3c90_0000_0000_0000]),
    ];
    check_table(table);
}

/// PTX min/max: a NaN operand gives the other operand, two NaNs the canonical NaN (`None`), and
/// -0 is below +0. f32 values go through f64 exactly.
fn min_max(a: f64, b: f64, max: bool) -> Option<f64> {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => None,
        (true, false) => Some(b),
        (false, true) => Some(a),
        _ if a == b => Some(if a.is_sign_negative() != max { a } else { b }),
        _ => Some(if (a < b) != max { a } else { b }),
    }
}

#[test]
fn min_max_with_nan_and_signed_zeros() {
    for (op, max) in [("min", false), ("max", true)] {
        let f32_bits = |r: f64| (r as f32).to_bits() as u64;
        let f32_case =
            |a, b| min_max(f32_of(a) as f64, f32_of(b) as f64, max).map_or(NAN32 as u64, f32_bits);
        let f64_case = |a, b| min_max(f64_of(a), f64_of(b), max).map_or(NAN64, f64::to_bits);
        #[rustfmt::skip]
        grid(&format!("{op}.f32 %d, %a, %b;"), "f32 = f32 f32", E32, f32_case);
        #[rustfmt::skip]
        grid(&format!("{op}.f64 %d, %a, %b;"), "f64 = f64 f64", E64, f64_case);
    }
    #[rustfmt::skip]
    let table: &[Case] = &[
        ("min.f32 %d, %a, %b;", "f32 = f32 f32", &[0x7fc0_0000, 0x3f80_0000], &[0x3f80_0000]),
        ("min.f32 %d, %a, %b;", "f32 = f32 f32", &[0x0000_0000, 0x8000_0000], &[0x8000_0000]),
        ("max.f32 %d, %a, %b;", "f32 = f32 f32", &[0x8000_0000, 0x0000_0000], &[0x0000_0000]),
        ("max.f32 %d, %a, %b;", "f32 = f32 f32", &[0x7fc0_0000, 0xffc0_0000], &[NAN32 as u64]),
        ("max.f64 %d, %a, %b;", "f64 = f64 f64", &[0xfff0_0000_0000_0000, 0x7ff8_0000_0000_0000], &[0xfff0_0000_0000_0000]),
    ];
    check_table(table);
}

#[test]
fn setp_every_float_comparison() {
    use std::cmp::Ordering::{Equal, Greater, Less};
    type Cmp = fn(Option<std::cmp::Ordering>) -> bool;
    let cmps: [(&str, Cmp); 14] = [
        ("eq", |o| o == Some(Equal)),
        ("ne", |o| matches!(o, Some(Less | Greater))),
        ("lt", |o| o == Some(Less)),
        ("le", |o| matches!(o, Some(Less | Equal))),
        ("gt", |o| o == Some(Greater)),
        ("ge", |o| matches!(o, Some(Greater | Equal))),
        ("equ", |o| matches!(o, None | Some(Equal))),
        ("neu", |o| o != Some(Equal)),
        ("ltu", |o| matches!(o, None | Some(Less))),
        ("leu", |o| o != Some(Greater)),
        ("gtu", |o| matches!(o, None | Some(Greater))),
        ("geu", |o| o != Some(Less)),
        ("num", |o| o.is_some()),
        ("nan", |o| o.is_none()),
    ];
    for (name, f) in cmps {
        let line = format!("setp.{name}.f32 %d, %a, %b;");
        grid(&line, "pred = f32 f32", E32, |a, b| {
            f(f32_of(a).partial_cmp(&f32_of(b))) as u64
        });
        let line = format!("setp.{name}.f64 %d, %a, %b;");
        grid(&line, "pred = f64 f64", E64, |a, b| {
            f(f64_of(a).partial_cmp(&f64_of(b))) as u64
        });
    }
    #[rustfmt::skip]
    let table: &[Case] = &[
        ("setp.eq.f32 %d, %a, %b;", "pred = f32 f32", &[0x8000_0000, 0], &[1]),          // -0 == +0
        ("setp.ne.f32 %d, %a, %b;", "pred = f32 f32", &[0x7fc0_0000, 0], &[0]),          // ordered
        ("setp.neu.f32 %d, %a, %b;", "pred = f32 f32", &[0x7fc0_0000, 0x7fc0_0000], &[1]),
        ("setp.equ.f64 %d, %a, %b;", "pred = f64 f64", &[0x7ff8_0000_0000_0000, 0], &[1]),
        ("setp.lt.f64 %d, %a, %b;", "pred = f64 f64", &[0xfff0_0000_0000_0000, 0xffef_ffff_ffff_ffff], &[1]),
    ];
    check_table(table);
}

#[test]
fn cvt_between_float_widths() {
    // Also: 2^-150 and 3 * 2^-150 (ties between f32 subnormals), 1e-40, 1e300, and f32::MAX plus
    // half an ulp (ties to inf) and a quarter ulp.
    #[rustfmt::skip]
    let more = [0x3690_0000_0000_0000, 0x36a8_0000_0000_0000, 0x37a1_6c26_2777_579c, 0x7e37_e43c_8800_759c,
        0x47ef_ffff_f000_0000, 0x47ef_ffff_e800_0000];
    let wide: Vec<u64> = E64.iter().copied().chain(more).collect();
    #[rustfmt::skip]
    each(&wide, &[("cvt.rn.f32.f64 %d, %a;", "f32 = f64", |v| f32b(f64_of(v) as f32))]);
    #[rustfmt::skip]
    each(E32, &[("cvt.f64.f32 %d, %a;", "f64 = f32", |v| f64b(f32_of(v) as f64))]);
    #[rustfmt::skip]
    let table: &[Case] = &[
        ("cvt.rn.f32.f64 %d, %a;", "f32 = f64", &[0x3690_0000_0000_0000], &[0]),            // 2^-150: to even 0
        ("cvt.rn.f32.f64 %d, %a;", "f32 = f64", &[0x36a8_0000_0000_0000], &[2]),            // 3*2^-150: to even
        ("cvt.rn.f32.f64 %d, %a;", "f32 = f64", &[0x47ef_ffff_f000_0000], &[0x7f80_0000]),  // MAX + ulp/2: inf
        ("cvt.rn.f32.f64 %d, %a;", "f32 = f64", &[0x3fb9_9999_9999_999a], &[0x3dcc_cccd]),  // 0.1
        ("cvt.rn.f32.f64 %d, %a;", "f32 = f64", &[0xfff8_0000_0000_0001], &[NAN32 as u64]),
        ("cvt.f64.f32 %d, %a;", "f64 = f32", &[1], &[0x36a0_0000_0000_0000]),               // 2^-149
        ("cvt.f64.f32 %d, %a;", "f64 = f32", &[0xff80_0000], &[0xfff0_0000_0000_0000]),
        ("cvt.f64.f32 %d, %a;", "f64 = f32", &[0x7f80_0001], &[NAN64]),
    ];
    check_table(table);
}

#[test]
fn cvt_float_to_integer_saturates() {
    // Also: 1.9, -0.9, -1, 2.5, -2.5, 3.5, 1e20, 2^63, 2^64, 2^31, -2^31, -2^31-1, 2^32-1, 2^32,
    // 65535.5, -32768.5.
    #[rustfmt::skip]
    let more = [1.9, -0.9, -1.0, 2.5, -2.5, 3.5, 1e20, 2f64.powi(63), 2f64.powi(64),
        2147483648.0, -2147483648.0, -2147483649.0, 4294967295.0, 4294967296.0, 65535.5, -32768.5];
    let f64s: Vec<u64> = E64.iter().copied().chain(more.map(f64::to_bits)).collect();
    let f32s: Vec<u64> = f64s
        .iter()
        .map(|&v| (f64_of(v) as f32).to_bits() as u64)
        .collect();
    // Rust's float-to-integer `as` truncates, saturates and maps NaN to 0: PTX's .rzi.
    #[rustfmt::skip]
    each(&f64s, &[
        ("cvt.rzi.u64.f64 %d, %a;", "b64 = f64", |v| f64_of(v) as u64),
        ("cvt.rzi.s64.f64 %d, %a;", "b64 = f64", |v| f64_of(v) as i64 as u64),
        ("cvt.rzi.s32.f64 %d, %a;", "b32 = f64", |v| f64_of(v) as i32 as u32 as u64),
        ("cvt.rni.s64.f64 %d, %a;", "b64 = f64", |v| f64_of(v).round_ties_even() as i64 as u64),
        ("cvt.rpi.u32.f64 %d, %a;", "b32 = f64", |v| f64_of(v).ceil() as u32 as u64),
    ]);
    #[rustfmt::skip]
    each(&f32s, &[
        ("cvt.rzi.s32.f32 %d, %a;", "b32 = f32", |v| f32_of(v) as i32 as u32 as u64),
        ("cvt.rzi.u32.f32 %d, %a;", "b32 = f32", |v| f32_of(v) as u32 as u64),
        ("cvt.rmi.s32.f32 %d, %a;", "b32 = f32", |v| f32_of(v).floor() as i32 as u32 as u64),
        ("cvt.rni.s16.f32 %d, %a;", "b16 = f32", |v| f32_of(v).round_ties_even() as i16 as u16 as u64),
        ("cvt.rzi.u16.f32 %d, %a;", "b16 = f32", |v| f32_of(v) as u16 as u64),
    ]);
    #[rustfmt::skip]
    let table: &[Case] = &[
        ("cvt.rzi.u64.f64 %d, %a;", "b64 = f64", &[0xbff0_0000_0000_0000], &[0]),                    // -1
        ("cvt.rzi.u64.f64 %d, %a;", "b64 = f64", &[0x7ff0_0000_0000_0000], &[u64::MAX]),             // inf
        ("cvt.rzi.u64.f64 %d, %a;", "b64 = f64", &[0x43e0_0000_0000_0000], &[1 << 63]),              // 2^63
        ("cvt.rzi.u64.f64 %d, %a;", "b64 = f64", &[NAN64], &[0]),
        ("cvt.rzi.s32.f32 %d, %a;", "b32 = f32", &[0xc020_0000], &[0xffff_fffe]),                    // -2.5
        ("cvt.rzi.s32.f32 %d, %a;", "b32 = f32", &[0x4f00_0000], &[0x7fff_ffff]),                    // 2^31
        ("cvt.rzi.s32.f32 %d, %a;", "b32 = f32", &[0xff80_0000], &[0x8000_0000]),                    // -inf
        ("cvt.rzi.s32.f32 %d, %a;", "b32 = f32", &[0x7fc0_0000], &[0]),
        ("cvt.rni.s32.f32 %d, %a;", "b32 = f32", &[0x4020_0000], &[2]),                              // 2.5
        ("cvt.rmi.s32.f32 %d, %a;", "b32 = f32", &[0xbf00_0000], &[0xffff_ffff]),                    // -0.5
    ];
    check_table(table);
}

#[test]
fn cvt_integer_to_float_and_round_to_integral() {
    #[rustfmt::skip]
    let ints = [0u64, 1, 16777217, (1 << 53) + 1, (1 << 53) + 3, 1 << 63, u64::MAX, 0x8000_0001,
        i64::MIN as u64 + 1, (-3i64) as u64, 0xffff_ffff, 0x7fff_ffff, 0xffff_ffff_8000_0000];
    #[rustfmt::skip]
    each(&ints, &[
        ("cvt.rn.f64.u64 %d, %a;", "f64 = b64", |v| (v as f64).to_bits()),
        ("cvt.rn.f64.s64 %d, %a;", "f64 = b64", |v| (v as i64 as f64).to_bits()),
        ("cvt.rn.f32.u64 %d, %a;", "f32 = b64", |v| (v as f32).to_bits() as u64),
        ("cvt.rn.f32.s64 %d, %a;", "f32 = b64", |v| (v as i64 as f32).to_bits() as u64),
    ]);
    let low: Vec<u64> = ints.iter().map(|v| v & 0xffff_ffff).collect();
    #[rustfmt::skip]
    each(&low, &[
        ("cvt.rn.f32.u32 %d, %a;", "f32 = b32", |v| (v as u32 as f32).to_bits() as u64),
        ("cvt.rn.f32.s32 %d, %a;", "f32 = b32", |v| (v as i32 as f32).to_bits() as u64),
        ("cvt.rn.f64.s32 %d, %a;", "f64 = b32", |v| (v as i32 as f64).to_bits()),
        ("cvt.rn.f32.s16 %d, %a;", "f32 = b16", |v| (v as i16 as f32).to_bits() as u64),
    ]);
    #[rustfmt::skip]
    each(E64, &[
        ("cvt.rmi.f64.f64 %d, %a;", "f64 = f64", |v| f64b(f64_of(v).floor())),
        ("cvt.rpi.f64.f64 %d, %a;", "f64 = f64", |v| f64b(f64_of(v).ceil())),
    ]);
    #[rustfmt::skip]
    each(E32, &[
        ("cvt.rni.f32.f32 %d, %a;", "f32 = f32", |v| f32b(f32_of(v).round_ties_even())),
        ("cvt.rzi.f32.f32 %d, %a;", "f32 = f32", |v| f32b(f32_of(v).trunc())),
    ]);
    #[rustfmt::skip]
    let table: &[Case] = &[
        ("cvt.rn.f64.u64 %d, %a;", "f64 = b64", &[u64::MAX], &[0x43f0_0000_0000_0000]),        // 2^64
        ("cvt.rn.f64.u64 %d, %a;", "f64 = b64", &[(1 << 53) + 1], &[0x4340_0000_0000_0000]),   // tie: even
        ("cvt.rn.f64.u64 %d, %a;", "f64 = b64", &[(1 << 53) + 3], &[0x4340_0000_0000_0002]),   // tie: up
        ("cvt.rn.f32.u32 %d, %a;", "f32 = b32", &[0xffff_ffff], &[0x4f80_0000]),
        ("cvt.rn.f32.s32 %d, %a;", "f32 = b32", &[0x8000_0000], &[0xcf00_0000]),
        ("cvt.rmi.f64.f64 %d, %a;", "f64 = f64", &[0xbfe0_0000_0000_0000], &[0xbff0_0000_0000_0000]), // -0.5
        ("cvt.rmi.f64.f64 %d, %a;", "f64 = f64", &[0x8000_0000_0000_0000], &[0x8000_0000_0000_0000]), // -0
        ("cvt.rmi.f64.f64 %d, %a;", "f64 = f64", &[0x8000_0000_0000_0001], &[0xbff0_0000_0000_0000]),
        ("cvt.rni.f32.f32 %d, %a;", "f32 = f32", &[0xbf00_0000], &[0x8000_0000]),               // -0.5: -0
    ];
    check_table(table);
}

/// An IEEE binary16 value by its definition: (-1)^s * 2^(e-15) * 1.m, or 2^-14 * 0.m.
fn half_value(h: u64) -> f32 {
    let (sign, exp, man) = (h >> 15 & 1, (h >> 10) & 0x1f, (h & 0x3ff) as f64);
    let magnitude = match exp {
        0 => man * 2f64.powi(-24),
        31 if man == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1024.0 + man) * 2f64.powi(e as i32 - 25),
    };
    (if sign == 1 { -magnitude } else { magnitude }) as f32
}

#[test]
fn cvt_f32_from_every_f16() {
    let all: Vec<u64> = (0..=u16::MAX as u64).collect();
    for chunk in all.chunks(1024) {
        #[rustfmt::skip]
        each(chunk, &[("cvt.f32.f16 %d, %a;", "f32 = b16", |h| f32b(half_value(h)))]);
    }
    #[rustfmt::skip]
    let table: &[Case] = &[
        ("cvt.f32.f16 %d, %a;", "f32 = b16", &[0x0001], &[0x3380_0000]), // 2^-24, the least subnormal
        ("cvt.f32.f16 %d, %a;", "f32 = b16", &[0x03ff], &[0x387f_c000]), // the greatest subnormal
        ("cvt.f32.f16 %d, %a;", "f32 = b16", &[0x7bff], &[0x477f_e000]), // 65504
        ("cvt.f32.f16 %d, %a;", "f32 = b16", &[0xfc00], &[0xff80_0000]),
        ("cvt.f32.f16 %d, %a;", "f32 = b16", &[0x8000], &[0x8000_0000]),
        ("cvt.f32.f16 %d, %a;", "f32 = b16", &[0x7e01], &[NAN32 as u64]),
    ];
    check_table(table);
}

#[test]
fn inexact_or_approximate_forms_are_refused() {
    #[rustfmt::skip]
    refused(&[
        "div.approx.f32 %f1, %f2, %f3;", "div.full.f32 %f1, %f2, %f3;", "div.f32 %f1, %f2, %f3;",
        "add.ftz.f32 %f1, %f2, %f3;", "mul.rn.ftz.f32 %f1, %f2, %f3;", "min.ftz.f32 %f1, %f2, %f3;",
        "sqrt.approx.f32 %f1, %f2;", "sqrt.f32 %f1, %f2;", "rcp.approx.f32 %f1, %f2;",
        "fma.f32 %f1, %f2, %f3, %f1;", "fma.rn.ftz.f32 %f1, %f2, %f3, %f1;", "ex2.approx.f32 %f1, %f2;",
        "add.rn.f16 %h1, %h2, %h3;", "atom.global.min.f32 %f1, [%rd1], %f2;",
        "cvt.f32.f64 %f1, %fd1;",     // narrowing needs a rounding mode
        "cvt.s32.f32 %r1, %f1;",      // so does float to integer
        "cvt.rn.s32.f32 %r1, %f1;",   // and it must be an integral one
        "cvt.rn.f64.f64 %fd1, %fd2;", // same-type rounding is .rni
    ]);
}

/// `cvt.rn.bf16.f32` (candle's cast kernels): round to nearest even, ties both ways, overflow to
/// inf, subnormals, signed zero; a NaN gives the canonical 0x7fff.
#[test]
fn cvt_bf16_from_f32_rounds_to_nearest_even() {
    let line = "cvt.rn.bf16.f32 %d, %a;";
    #[rustfmt::skip]
    let table: &[Case] = &[
        (line, "b16 = f32", &[0x3f80_0000], &[0x3f80]), // 1
        (line, "b16 = f32", &[0x3f80_8000], &[0x3f80]), // a tie to the even 1
        (line, "b16 = f32", &[0x3f81_8000], &[0x3f82]), // a tie up to even
        (line, "b16 = f32", &[0x3f80_8001], &[0x3f81]), // just above the tie
        (line, "b16 = f32", &[0xbf80_7fff], &[0xbf80]), // just below the tie, negative
        (line, "b16 = f32", &[0x7f7f_ffff], &[0x7f80]), // f32::MAX rounds to inf
        (line, "b16 = f32", &[0x7f7f_7fff], &[0x7f7f]), // the greatest finite bf16
        (line, "b16 = f32", &[0x0001_8000], &[0x0002]), // a subnormal tie, up to even
        (line, "b16 = f32", &[0x0000_8000], &[0x0000]), // a subnormal tie, down to even 0
        (line, "b16 = f32", &[0x8000_0000], &[0x8000]), // -0
        (line, "b16 = f32", &[0xff80_0000], &[0xff80]), // -inf
        (line, "b16 = f32", &[0x7fc0_0000], &[0x7fff]), // NaN
        (line, "b16 = f32", &[0xffc0_0001], &[0x7fff]), // NaN, negative with payload
    ];
    check_table(table);
    refused(&[
        "cvt.rz.bf16.f32 %h1, %f1;",
        "cvt.rn.bf16.f64 %h1, %fd1;",
        "cvt.rn.sat.bf16.f32 %h1, %f1;",
    ]);
}

#[test]
fn cvt_to_f16_is_refused() {
    refused(&["cvt.rn.f16.f32 %h1, %f1;", "cvt.rn.f16.f64 %h1, %fd1;"]);
}

#[test]
fn directed_rounding_to_a_float_is_refused() {
    refused(&[
        "cvt.rz.f32.f64 %f1, %fd1;",
        "cvt.rm.f32.f64 %f1, %fd1;",
        "cvt.rp.f32.f64 %f1, %fd1;",
        "cvt.rz.f32.u32 %f1, %r1;",
        "cvt.rm.f64.u64 %fd1, %rd1;",
    ]);
}

#[test]
fn cvt_sat_to_float_flushes_nan_to_zero() {
    #[rustfmt::skip]
    let table: &[Case] = &[
        ("cvt.rn.sat.f32.f64 %d, %a;", "f32 = f64", &[0x4000_0000_0000_0000], &[0x3f80_0000]), // 2 -> 1
        ("cvt.rn.sat.f32.f64 %d, %a;", "f32 = f64", &[0xbff0_0000_0000_0000], &[0]),           // -1 -> 0
        ("cvt.rn.sat.f32.f64 %d, %a;", "f32 = f64", &[NAN64], &[0]),
        ("cvt.rni.sat.f32.f32 %d, %a;", "f32 = f32", &[0x7fc0_0000], &[0]),
    ];
    check_table(table);
}

//! Memory instructions: ld/st in the global, shared, param and generic spaces at every width,
//! with sign extension into wider registers, .v2/.v4 vectors, memcheck/initcheck on bad accesses,
//! and atomics (global and shared: add u32/u64/f32/f64, min/max, inc/dec, bitwise, exch, cas),
//! alone and under contention across scheduling seeds.

mod common;
use common::{check_table, kernel, params, parse, Case, Gpu, NAN32};
use gradmask_vgpu::exec::{Fault, FaultKind, Options};

const IO_DECLS: &str = ".reg .b32 %r<16>;\n.reg .b64 %rd<16>;\n.reg .f32 %f<4>;\n\
                        .reg .f64 %fd<4>;\n.reg .b16 %h<6>;\n.reg .pred %p<4>;\n\
                        .shared .align 16 .b8 s_buf[64];";

/// Runs `body` (after `%rd1 = p_in`, `%rd2 = p_out`) on `dims` = [blocks, threads a block], with
/// `input` as p_in and `out` = (length, fill byte) as p_out; gives both buffers afterwards.
fn launch(
    body: &str,
    input: &[u8],
    out: (usize, u8),
    dims: [u32; 2],
    opts: Options,
) -> Result<[Vec<u8>; 2], Fault> {
    let text = kernel(
        IO_DECLS,
        &format!("ld.param.u64 %rd1, [p_in];\nld.param.u64 %rd2, [p_out];\n{body}"),
    );
    let mut gpu = Gpu::new();
    let (p_in, p_out) = (gpu.upload(input), gpu.upload(&vec![out.1; out.0]));
    gpu.launch(
        &text,
        [dims[0], 1, 1],
        [dims[1], 1, 1],
        &params(&[p_in, p_out]),
        opts,
    )?;
    Ok([gpu.read(p_in, input.len()), gpu.read(p_out, out.0)])
}

/// `launch` of one thread with p_out filled with 0xee; gives p_out.
fn run(body: &str, input: &[u8], out_len: usize) -> Result<Vec<u8>, Fault> {
    let [_, out] = launch(body, input, (out_len, 0xee), [1, 1], Options::default())?;
    Ok(out)
}

fn run_ok(body: &str, input: &[u8], out_len: usize) -> Vec<u8> {
    run(body, input, out_len).unwrap_or_else(|f| panic!("{f}"))
}

fn words(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn le(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn ld_st_global_every_width_and_extension() {
    let input = [
        0x80, 0x11, 0xcd, 0xab, 0, 0, 0, 0x80, 0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01,
    ];
    let body = "ld.global.s8 %r1, [%rd1];\nld.global.u8 %r2, [%rd1];\nld.global.s16 %r3, [%rd1+2];\n\
        ld.global.u16 %r4, [%rd1+2];\nld.global.s32 %rd3, [%rd1+4];\nld.global.u32 %rd4, [%rd1+4];\n\
        ld.global.u64 %rd5, [%rd1+8];\nld.global.f32 %f1, [%rd1+4];\nld.global.f64 %fd1, [%rd1+8];\n\
        ld.global.b16 %h1, [%rd1+2];\nst.global.u32 [%rd2], %r1;\nst.global.u32 [%rd2+4], %r2;\n\
        st.global.u32 [%rd2+8], %r3;\nst.global.u32 [%rd2+12], %r4;\nst.global.u64 [%rd2+16], %rd3;\n\
        st.global.u64 [%rd2+24], %rd4;\nst.global.u64 [%rd2+32], %rd5;\nst.global.f32 [%rd2+40], %f1;\n\
        st.global.f64 [%rd2+48], %fd1;\nst.global.u8 [%rd2+57], %r4;\nst.global.u16 [%rd2+60], %r3;\n\
        st.global.b16 [%rd2+44], %h1;";
    let got = run_ok(body, &input, 64);
    let mut want = le(&[0xffff_ff80, 0x80, 0xffff_abcd, 0xabcd]);
    want.extend(
        [0xffff_ffff_8000_0000u64, 0x8000_0000, 0x0123_4567_89ab_cdef]
            .map(u64::to_le_bytes)
            .concat(),
    );
    want.extend(le(&[0x8000_0000]));
    want.extend([0xcd, 0xab, 0xee, 0xee]); // a b16 store writes two bytes
    want.extend(0x0123_4567_89ab_cdefu64.to_le_bytes());
    want.extend([0xee, 0xcd, 0xee, 0xee, 0xcd, 0xab, 0xee, 0xee]); // u8 and u16 stores truncate
    assert_eq!(got, want);
}

#[test]
fn vector_loads_and_stores() {
    let w: Vec<u32> = (0..8).map(|i| 0x1111_1111 * (i + 1)).collect();
    let body = "ld.global.v4.u32 {%r1, %r2, %r3, %r4}, [%rd1];\nld.global.v2.u64 {%rd3, %rd4}, [%rd1+16];\n\
        ld.global.v4.u32 {%r5, _, %r6, _}, [%rd1+16];\nld.global.v2.f32 {%f1, %f2}, [%rd1+8];\n\
        ld.global.v4.b16 {%h1, %h2, %h3, %h4}, [%rd1];\nst.global.v4.u32 [%rd2], {%r4, %r3, %r2, %r1};\n\
        st.global.v2.u64 [%rd2+16], {%rd4, %rd3};\nst.global.v2.u32 [%rd2+32], {%r5, %r6};\n\
        st.global.v2.f32 [%rd2+40], {%f2, %f1};\nst.global.v4.b16 [%rd2+48], {%h4, %h3, %h2, %h1};\n\
        st.global.v2.u32 [%rd2+56], {7, 9};";
    let got = words(&run_ok(body, &le(&w), 64));
    let h = |i: usize| (w[i / 2] >> (16 * (i % 2))) & 0xffff;
    let want = [
        w[3], w[2], w[1], w[0], w[6], w[7], w[4], w[5], w[4], w[6], w[3], w[2],
    ];
    let want: Vec<u32> = want
        .into_iter()
        .chain([h(3) | h(2) << 16, h(1) | h(0) << 16, 7, 9])
        .collect();
    assert_eq!(got, want);
}

#[test]
fn bad_accesses_are_faults() {
    let input = le(&[1, 2, 3, 4, 5, 6, 7, 8]); // 32 bytes
    #[rustfmt::skip]
    let cases = [
        ("ld.global.u32 %r1, [%rd1+2];", FaultKind::Misaligned),
        ("ld.global.v4.u32 {%r1, %r2, %r3, %r4}, [%rd1+8];", FaultKind::Misaligned), // 16-byte access
        ("ld.global.u64 %rd3, [%rd1+32];", FaultKind::Memcheck),                      // past the end
        ("ld.global.u32 %r1, [%rd2];", FaultKind::Memcheck),                         // p_out is 0 bytes
        ("mov.u64 %rd3, 0;\nld.u32 %r1, [%rd3];", FaultKind::Memcheck),              // null
        ("ld.shared.u32 %r1, [s_buf+4];", FaultKind::Initcheck),                     // never written
        ("ld.shared.u32 %r1, [s_buf+64];", FaultKind::Memcheck),                     // past the block's shared
        ("atom.global.add.u32 %r1, [%rd1+32], 1;", FaultKind::Memcheck),
    ];
    for (body, kind) in cases {
        let fault = run(body, &input, 0).expect_err(body);
        assert_eq!(fault.kind, kind, "`{body}`: {fault}");
    }
    // A buffer the host never wrote is uninitialised.
    let mut gpu = Gpu::new();
    let (p_in, p_out) = (gpu.mem.alloc(16), gpu.upload(&[0; 16]));
    let text = kernel(
        IO_DECLS,
        "ld.param.u64 %rd1, [p_in];\nld.global.u32 %r1, [%rd1+4];",
    );
    let fault = gpu.launch(
        &text,
        [1; 3],
        [1; 3],
        &params(&[p_in, p_out]),
        Options::default(),
    );
    assert_eq!(fault.expect_err("uninitialised").kind, FaultKind::Initcheck);
}

#[test]
fn param_space_layout_and_loads() {
    let text = ".version 9.0\n.target sm_90\n.address_size 64\n\
        .visible .entry k(.param .u32 p_a, .param .u64 p_out, .param .u16 p_b, .param .align 8 .b8 p_s[16])\n\
        {\n.reg .b32 %r<4>;\n.reg .b64 %rd<3>;\n.reg .b16 %h1;\n\
        ld.param.u32 %r1, [p_a];\nld.param.u64 %rd1, [p_out];\nld.param.u16 %h1, [p_b];\n\
        ld.param.v2.u32 {%r2, %r3}, [p_s+8];\nld.param.u64 %rd2, [p_s];\nst.global.u32 [%rd1], %r1;\n\
        st.global.u16 [%rd1+4], %h1;\nst.global.v2.u32 [%rd1+8], {%r2, %r3};\nst.global.u64 [%rd1+16], %rd2;\n}\n";
    let k = &parse(text).kernels[0];
    let layout: Vec<(u32, u32)> = k.params.iter().map(|p| (p.offset, p.size)).collect();
    assert_eq!(
        (layout, k.param_bytes),
        (vec![(0, 4), (8, 8), (16, 2), (24, 16)], 40)
    );
    let mut gpu = Gpu::new();
    let out = gpu.upload(&[0; 24]);
    let mut args = vec![0u8; 40];
    args[0..4].copy_from_slice(&0xdead_beefu32.to_le_bytes());
    args[8..16].copy_from_slice(&out.to_le_bytes());
    args[16..18].copy_from_slice(&0xabcdu16.to_le_bytes());
    args[24..40].copy_from_slice(&le(&[1, 2, 3, 4]));
    gpu.launch(text, [1; 3], [1; 3], &args, Options::default())
        .unwrap();
    assert_eq!(gpu.read_u32(out, 6), [0xdead_beef, 0xabcd, 3, 4, 1, 2]);
}

#[test]
fn shared_and_generic_addressing() {
    let w = [0x89ab_cdefu32, 0x1234_5678, 0x0bad_f00d, 0xcafe_babe];
    let body = "ld.global.v4.u32 {%r1, %r2, %r3, %r4}, [%rd1];\nst.shared.v4.u32 [s_buf], {%r1, %r2, %r3, %r4};\n\
        ld.shared.u8 %r5, [s_buf+1];\nld.shared.s16 %r6, [s_buf+2];\nld.shared.v2.u64 {%rd3, %rd4}, [s_buf];\n\
        mov.u64 %rd5, s_buf;\ncvta.shared.u64 %rd6, %rd5;\nst.u32 [%rd6+16], %r4;\n\
        ld.shared.u32 %r7, [s_buf+16];\nld.u32 %r8, [%rd6+4];\ncvta.to.shared.u64 %rd7, %rd6;\n\
        cvta.to.global.u64 %rd8, %rd1;\nld.u32 %r9, [%rd1+8];\nld.global.u32 %r10, [%rd8+12];\n\
        mov.u32 %r11, s_buf;\nadd.u32 %r11, %r11, 4;\nld.shared.u32 %r12, [%r11];\nsub.s64 %rd7, %rd7, %rd5;\n\
        st.global.v4.u32 [%rd2], {%r5, %r6, %r7, %r8};\nst.global.v2.u64 [%rd2+16], {%rd3, %rd4};\n\
        st.global.v4.u32 [%rd2+32], {%r9, %r10, %r12, 0};\nst.u64 [%rd2+48], %rd7;";
    let got = run_ok(body, &le(&w), 56);
    let lo = |i: usize| w[i] as u64 | (w[i + 1] as u64) << 32;
    let mut want = le(&[0xcd, 0xffff_89ab, w[3], w[1]]);
    want.extend([lo(0), lo(2)].map(u64::to_le_bytes).concat());
    want.extend(le(&[w[2], w[3], w[1], 0, 0, 0])); // the last 8 bytes: generic to shared and back is 0 apart
    assert_eq!(got, want);
}

#[test]
fn atomics_one_thread_per_case() {
    // `%in` is the case's own slot, initialised to `%a`: `%d` gets the old value, `%e` the new.
    let (w32, w64) = ("b32 b32 = b32 b32", "b64 b64 = b64 b64");
    let cas32 = "b32 b32 = b32 b32 b32";
    const NAN: u64 = NAN32 as u64;
    #[rustfmt::skip]
    let table: &[Case] = &[
        ("atom.global.add.u32 %d, [%in], %b;\nld.global.b32 %e, [%in];", w32, &[0xffff_ffff, 2], &[0xffff_ffff, 1]),
        ("atom.global.add.u64 %d, [%in], %b;\nld.global.b64 %e, [%in];", w64, &[u64::MAX, 2], &[u64::MAX, 1]),
        ("atom.global.add.f32 %d, [%in], %b;\nld.global.b32 %e, [%in];", w32, &[0x3f80_0000, 0x3f00_0000], &[0x3f80_0000, 0x3fc0_0000]),
        ("atom.global.add.f32 %d, [%in], %b;\nld.global.b32 %e, [%in];", w32, &[0x7f80_0000, 0xff80_0000], &[0x7f80_0000, NAN]),
        ("atom.global.add.f32 %d, [%in], %b;\nld.global.b32 %e, [%in];", w32, &[0x7f80_0001, 0x3f80_0000], &[0x7f80_0001, NAN]),
        ("atom.global.add.f64 %d, [%in], %b;\nld.global.b64 %e, [%in];", w64, &[0x3ff0_0000_0000_0000, 0x3fd0_0000_0000_0000], &[0x3ff0_0000_0000_0000, 0x3ff4_0000_0000_0000]),
        ("atom.global.min.u32 %d, [%in], %b;\nld.global.b32 %e, [%in];", w32, &[5, 0xffff_ffff], &[5, 5]),
        ("atom.global.min.s32 %d, [%in], %b;\nld.global.b32 %e, [%in];", w32, &[5, 0xffff_ffff], &[5, 0xffff_ffff]),
        ("atom.global.max.u32 %d, [%in], %b;\nld.global.b32 %e, [%in];", w32, &[5, 0xffff_ffff], &[5, 0xffff_ffff]),
        ("atom.global.max.s32 %d, [%in], %b;\nld.global.b32 %e, [%in];", w32, &[5, 0xffff_ffff], &[5, 5]),
        ("atom.global.min.s64 %d, [%in], %b;\nld.global.b64 %e, [%in];", w64, &[1, 1 << 63], &[1, 1 << 63]),
        ("atom.global.max.u64 %d, [%in], %b;\nld.global.b64 %e, [%in];", w64, &[1, 1 << 63], &[1, 1 << 63]),
        ("atom.global.inc.u32 %d, [%in], %b;\nld.global.b32 %e, [%in];", w32, &[3, 5], &[3, 4]),
        ("atom.global.inc.u32 %d, [%in], %b;\nld.global.b32 %e, [%in];", w32, &[5, 5], &[5, 0]),  // old >= b: 0
        ("atom.global.inc.u32 %d, [%in], %b;\nld.global.b32 %e, [%in];", w32, &[7, 5], &[7, 0]),
        ("atom.global.dec.u32 %d, [%in], %b;\nld.global.b32 %e, [%in];", w32, &[3, 5], &[3, 2]),
        ("atom.global.dec.u32 %d, [%in], %b;\nld.global.b32 %e, [%in];", w32, &[0, 5], &[0, 5]),  // 0 or old > b: b
        ("atom.global.dec.u32 %d, [%in], %b;\nld.global.b32 %e, [%in];", w32, &[7, 5], &[7, 5]),
        ("atom.global.and.b32 %d, [%in], %b;\nld.global.b32 %e, [%in];", w32, &[0xff00_ff00, 0x0ff0_0ff0], &[0xff00_ff00, 0x0f00_0f00]),
        ("atom.global.or.b32 %d, [%in], %b;\nld.global.b32 %e, [%in];", w32, &[0xff00_ff00, 0x0ff0_0ff0], &[0xff00_ff00, 0xfff0_fff0]),
        ("atom.global.xor.b32 %d, [%in], %b;\nld.global.b32 %e, [%in];", w32, &[0xff00_ff00, 0x0ff0_0ff0], &[0xff00_ff00, 0xf0f0_f0f0]),
        ("atom.global.exch.b32 %d, [%in], %b;\nld.global.b32 %e, [%in];", w32, &[1, 2], &[1, 2]),
        ("atom.global.exch.b64 %d, [%in], %b;\nld.global.b64 %e, [%in];", w64, &[u64::MAX, 2], &[u64::MAX, 2]),
        ("atom.global.cas.b32 %d, [%in], %b, %c;\nld.global.b32 %e, [%in];", cas32, &[5, 5, 9], &[5, 9]),
        ("atom.global.cas.b32 %d, [%in], %b, %c;\nld.global.b32 %e, [%in];", cas32, &[5, 4, 9], &[5, 5]),
        ("atom.global.cas.b64 %d, [%in], %b, %c;\nld.global.b64 %e, [%in];", "b64 b64 = b64 b64 b64", &[u64::MAX, u64::MAX, 0], &[u64::MAX, 0]),
        ("atom.global.relaxed.gpu.add.u32 %d, [%in], %b;\nld.global.b32 %e, [%in];", w32, &[1, 2], &[1, 3]),
        ("red.global.add.u32 [%in], %b;\nld.global.b32 %d, [%in];", "b32 = b32 b32", &[1, 2], &[3]),
        ("atom.global.add.noftz.f32 %d, [%in], %b;\nld.global.b32 %d, [%in];", "b32 = b32 b32", &[1, 1], &[2]), // kept
        ("red.global.add.f64 [%in], %b;\nld.global.b64 %d, [%in];", "b64 = b64 b64", &[0x3ff0_0000_0000_0000, 1], &[0x3ff0_0000_0000_0000]),
    ];
    check_table(table);
}

#[test]
fn atom_global_add_f32_flushes_subnormals() {
    #[rustfmt::skip]
    let table: &[Case] = &[
        ("atom.global.add.f32 %d, [%in], %b;\nld.global.b32 %d, [%in];", "b32 = b32 b32", &[1, 1], &[0]),
        ("atom.global.add.f32 %d, [%in], %b;\nld.global.b32 %d, [%in];", "b32 = b32 b32", &[0x0080_0000, 0x8000_0001], &[0x0080_0000]),
        ("red.global.add.f32 [%in], %b;\nld.global.b32 %d, [%in];", "b32 = b32 b32", &[1, 1], &[0]),
    ];
    check_table(table);
}

/// Runs `atom` on 128 threads in blocks of 64, under seeds 0..4 with and without `its`: p_in
/// starts as `init`, `%r10` is the thread's index and `%rd11` the address of its `width`-byte
/// slot in p_out (for the old value). Gives each run's final p_in and sorted old values.
fn contend(atom: &str, init: &[u8], width: usize) -> Vec<(Vec<u8>, Vec<u64>)> {
    let n = 128;
    let body = format!(
        "mov.u32 %r11, %ctaid.x;\nmov.u32 %r12, %tid.x;\nmad.lo.u32 %r10, %r11, 64, %r12;\n\
         mul.wide.u32 %rd11, %r10, {width};\nadd.s64 %rd11, %rd2, %rd11;\n{atom}"
    );
    let mut runs = Vec::new();
    for (seed, its) in (0..4).flat_map(|seed| [(seed, false), (seed, true)]) {
        let got = launch(&body, init, (n * width, 0), [2, 64], Options { seed, its });
        let [fin, out] = got.unwrap_or_else(|f| panic!("`{atom}` seed {seed} its {its}: {f}"));
        let slot = |c: &[u8]| c.iter().rev().fold(0u64, |v, &b| v << 8 | b as u64);
        let mut olds: Vec<u64> = out.chunks(width).map(slot).collect();
        olds.sort_unstable();
        runs.push((fin, olds));
    }
    runs
}

#[test]
fn atomics_under_contention_agree_across_seeds() {
    let n = 128u64;
    let same = |runs: &[(Vec<u8>, Vec<u64>)]| runs.iter().all(|r| *r == runs[0]);
    // Every thread adds 1: the old values are 0..n in some order.
    let runs = contend(
        "atom.global.add.u32 %r1, [%rd1], 1;\nst.global.u32 [%rd11], %r1;",
        &le(&[0]),
        4,
    );
    assert!(
        same(&runs) && runs[0] == (le(&[n as u32]), (0..n).collect()),
        "add.u32"
    );
    // Across the u64 wrap.
    let start = u64::MAX - 10;
    let runs = contend(
        "atom.global.add.u64 %rd3, [%rd1], 1;\nst.global.u64 [%rd11], %rd3;",
        &start.to_le_bytes(),
        8,
    );
    let mut olds: Vec<u64> = (0..n).map(|i| start.wrapping_add(i)).collect();
    olds.sort_unstable();
    assert!(
        same(&runs) && runs[0] == (start.wrapping_add(n).to_le_bytes().to_vec(), olds),
        "add.u64"
    );
    // 0.5 and 0.25 steps are exact, so the order does not change the sums.
    let runs = contend(
        "atom.global.add.f32 %f1, [%rd1], 0f3F000000;\nst.global.f32 [%rd11], %f1;",
        &1f32.to_le_bytes(),
        4,
    );
    let olds = (0..n)
        .map(|i| (1.0 + 0.5 * i as f32).to_bits() as u64)
        .collect();
    assert!(
        same(&runs) && runs[0] == ((1.0 + 0.5 * n as f32).to_le_bytes().to_vec(), olds),
        "add.f32"
    );
    let runs = contend(
        "atom.global.add.f64 %fd1, [%rd1], 0d3FD0000000000000;\nst.global.f64 [%rd11], %fd1;",
        &2f64.to_le_bytes(),
        8,
    );
    let olds = (0..n).map(|i| (2.0 + 0.25 * i as f64).to_bits()).collect();
    assert!(
        same(&runs) && runs[0] == ((2.0 + 0.25 * n as f64).to_le_bytes().to_vec(), olds),
        "add.f64"
    );
    // min/max: only the final value is fixed.
    let runs = contend(
        "sub.s32 %r2, %r10, 20;\natom.global.min.s32 %r1, [%rd1], %r2;",
        &le(&[7]),
        4,
    );
    assert!(
        runs.iter().all(|r| r.0 == le(&[(-20i32) as u32])),
        "min.s32"
    );
    let runs = contend(
        "mul.lo.u32 %r2, %r10, 3;\natom.global.max.u32 %r1, [%rd1], %r2;",
        &le(&[7]),
        4,
    );
    assert!(runs.iter().all(|r| r.0 == le(&[3 * 127])), "max.u32");
    // A compare-and-swap loop that increments: each thread swaps from a distinct value.
    let cas = "LOOP:\natom.global.or.b32 %r1, [%rd1], 0;\nadd.u32 %r2, %r1, 1;\n\
               atom.global.cas.b32 %r3, [%rd1], %r1, %r2;\nsetp.ne.u32 %p1, %r3, %r1;\n@%p1 bra LOOP;\n\
               st.global.u32 [%rd11], %r1;";
    let runs = contend(cas, &le(&[0]), 4);
    assert!(
        same(&runs) && runs[0] == (le(&[n as u32]), (0..n).collect()),
        "cas loop"
    );
    // exch: the old values and the final one are the initial value and every index.
    let runs = contend(
        "atom.global.exch.b32 %r1, [%rd1], %r10;\nst.global.u32 [%rd11], %r1;",
        &le(&[999]),
        4,
    );
    for (fin, olds) in runs {
        let mut all: Vec<u64> = olds.into_iter().chain([words(&fin)[0] as u64]).collect();
        all.sort_unstable();
        assert_eq!(all, (0..n).chain([999]).collect::<Vec<_>>(), "exch");
    }
}

#[test]
fn shared_atomics() {
    // Thread 0 zeroes 32 bytes, then 64 threads update them; subnormals are kept in shared memory.
    let body = "mov.u32 %r10, %tid.x;\nsetp.ne.u32 %p1, %r10, 0;\n@%p1 bra READY;\n\
        st.shared.v4.u32 [s_buf], {0, 0, 0, 0xffffffff};\nst.shared.v4.u32 [s_buf+16], {0, 0, 0, 0};\n\
        READY:\nbar.sync 0;\natom.shared.add.u32 %r1, [s_buf], 1;\natom.shared.max.u32 %r2, [s_buf+4], %r10;\n\
        atom.shared.add.f32 %f1, [s_buf+8], 0f00000001;\natom.shared.min.u32 %r3, [s_buf+12], %r10;\n\
        mov.u32 %r4, s_buf;\natom.shared.add.u64 %rd3, [%r4+16], 4294967296;\nred.shared.add.u32 [s_buf+24], 2;\n\
        bar.sync 0;\n@%p1 bra DONE;\nld.shared.v4.u32 {%r1, %r2, %r3, %r4}, [s_buf];\n\
        ld.shared.v2.u64 {%rd3, %rd4}, [s_buf+16];\nst.global.v4.u32 [%rd2], {%r1, %r2, %r3, %r4};\n\
        st.global.v2.u64 [%rd2+16], {%rd3, %rd4};\nDONE:";
    let mut want = le(&[64, 63, 64, 0]); // 64 * 2^-149 has the bits 64
    want.extend([64u64 << 32, 128].map(u64::to_le_bytes).concat());
    for (seed, its) in (0..4).flat_map(|seed| [(seed, false), (seed, true)]) {
        let got = launch(body, &[0; 4], (32, 0xee), [1, 64], Options { seed, its });
        let [_, out] = got.unwrap_or_else(|f| panic!("seed {seed} its {its}: {f}"));
        assert_eq!(out, want, "seed {seed} its {its}");
    }
}

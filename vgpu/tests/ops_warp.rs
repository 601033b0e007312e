//! Warp-level and control-flow instructions: shfl.sync in every mode with member masks and the
//! clamp/segment operand `c`, vote.sync, activemask, the special registers, bar.sync, divergent
//! branches that rejoin, and results that do not depend on the scheduling seed.
//!
//! Expected shuffles follow the PTX ISA's pseudo-code for `shfl.sync` (written out in `shfl_ref`),
//! with hand-picked lanes checked on their own.

mod common;
use common::{eval, kernel, params, try_eval, Gpu};
use gradmask_vgpu::exec::{FaultKind, Options};

const FULL: u64 = 0xffff_ffff;

/// A distinct value per lane.
fn value(lane: u32) -> u64 {
    0x100 + 7 * lane as u64
}

/// One row per lane of a full warp, from a function of the lane.
fn rows(f: impl Fn(u32) -> Vec<u64>) -> Vec<Vec<u64>> {
    (0..32).map(f).collect()
}

/// The ISA's `shfl.sync` for every lane of a full warp: `[value read, in range]`.
fn shfl_ref(mode: &str, b: impl Fn(u32) -> u32, c: u32) -> Vec<Vec<u64>> {
    let (seg, cval) = ((c >> 8) & 31, c & 31);
    (0..32u32)
        .map(|lane| {
            let (b, max_lane, min_lane) = (b(lane) & 31, (lane & seg) | (cval & !seg), lane & seg);
            let (j, ok) = match mode {
                "up" => (
                    lane.wrapping_sub(b),
                    lane as i32 - b as i32 >= max_lane as i32,
                ),
                "down" => (lane + b, lane + b <= max_lane),
                "bfly" => (lane ^ b, lane ^ b <= max_lane),
                _ => (min_lane | (b & !seg), min_lane | (b & !seg) <= max_lane),
            };
            vec![value(if ok { j } else { lane }), ok as u64]
        })
        .collect()
}

#[test]
fn shfl_sync_modes_and_segments() {
    // (mode, b, c): c = 0x1f clamps at lane 31, c = (32 - width) << 8 | ... splits segments.
    #[rustfmt::skip]
    let cases: &[(&str, u32, u32)] = &[
        ("up", 1, 0), ("up", 5, 0), ("up", 1, 0x1800), ("up", 2, 0x1c00),
        ("down", 1, 0x1f), ("down", 16, 0x1f), ("down", 1, 0x181f), ("down", 3, 0x1c1f),
        ("bfly", 1, 0x1f), ("bfly", 16, 0x1f), ("bfly", 31, 0x1f), ("bfly", 4, 0x181f),
        ("idx", 7, 0x1f), ("idx", 3, 0x181f), ("idx", 35, 0x1f), ("idx", 0, 0x101f),
    ];
    let input = rows(|l| vec![value(l)]);
    for &(mode, b, c) in cases {
        let line = format!("shfl.sync.{mode}.b32 %d|%e, %a, {b}, {c}, 0xffffffff;");
        let got = eval(&line, &["b32", "pred"], &["b32"], &input);
        assert_eq!(got, shfl_ref(mode, |_| b, c), "`{line}`");
    }
    // b and c from registers, b different in every lane.
    let line = "shfl.sync.idx.b32 %d|%e, %a, %b, %c, 0xffffffff;";
    let input = rows(|l| vec![value(l), (31 - l) as u64, 0x181f]);
    let got = eval(line, &["b32", "pred"], &["b32", "b32", "b32"], &input);
    assert_eq!(got, shfl_ref("idx", |l| 31 - l, 0x181f), "`{line}`");
    // Hand-picked lanes: [value, in range].
    let sig = (&["b32", "pred"][..], &["b32"][..]);
    let run = |line: &str| eval(line, sig.0, sig.1, &rows(|l| vec![value(l)]));
    let up = run("shfl.sync.up.b32 %d|%e, %a, 1, 0, 0xffffffff;");
    assert_eq!((&up[0], &up[5]), (&vec![value(0), 0], &vec![value(4), 1]));
    let up8 = run("shfl.sync.up.b32 %d|%e, %a, 1, 0x1800, 0xffffffff;");
    assert_eq!((&up8[8], &up8[9]), (&vec![value(8), 0], &vec![value(8), 1]));
    let down8 = run("shfl.sync.down.b32 %d|%e, %a, 1, 0x181f, 0xffffffff;");
    assert_eq!(
        (&down8[6], &down8[7]),
        (&vec![value(7), 1], &vec![value(7), 0])
    );
    let bfly = run("shfl.sync.bfly.b32 %d|%e, %a, 16, 0x1f, 0xffffffff;");
    assert_eq!(bfly[3], vec![value(19), 1]);
    let idx8 = run("shfl.sync.idx.b32 %d|%e, %a, 3, 0x181f, 0xffffffff;");
    assert_eq!(idx8[13], vec![value(11), 1]);
}

#[test]
fn shfl_sync_with_partial_member_masks() {
    // Lanes 0..15 take part with member mask 0xffff; the others skip the instruction.
    let line = "mov.b32 %d, 0xdead;\n@%b shfl.sync.bfly.b32 %d, %a, 1, 0x1f, 0xffff;";
    let got = eval(
        line,
        &["b32"],
        &["b32", "pred"],
        &rows(|l| vec![value(l), (l < 16) as u64]),
    );
    let want = rows(|l| vec![if l < 16 { value(l ^ 1) } else { 0xdead }]);
    assert_eq!(got, want, "`{line}`");
    // The odd lanes, with the member mask in a register.
    let line = "mov.b32 %d, 0xdead;\n@%b shfl.sync.idx.b32 %d, %a, 3, 0x1f, %c;";
    let input = rows(|l| vec![value(l), (l % 2) as u64, 0xaaaa_aaaa]);
    let got = eval(line, &["b32"], &["b32", "pred", "b32"], &input);
    assert_eq!(
        got,
        rows(|l| vec![if l % 2 == 1 { value(3) } else { 0xdead }])
    );
    let line = "mov.b32 %d, 0xdead;\n@%b shfl.sync.bfly.b32 %d, %a, 2, 0x1f, 0xaaaaaaaa;";
    let got = eval(
        line,
        &["b32"],
        &["b32", "pred"],
        &rows(|l| vec![value(l), (l % 2) as u64]),
    );
    assert_eq!(
        got,
        rows(|l| vec![if l % 2 == 1 { value(l ^ 2) } else { 0xdead }])
    );
}

fn fault(line: &str, srcs: &[&str], input: &[Vec<u64>]) -> FaultKind {
    match try_eval(line, &["b32"], srcs, input, Options::default()) {
        Ok(out) => panic!("`{line}` ran: {out:x?}"),
        Err(f) => f.kind,
    }
}

#[test]
fn shfl_sync_misuse_is_a_synccheck_fault() {
    let half = rows(|l| vec![value(l), (l < 16) as u64]);
    let srcs = ["b32", "pred"];
    // A member lane never arrives (it skips the instruction and exits).
    let line = "@%b shfl.sync.bfly.b32 %d, %a, 1, 0x1f, 0xffffffff;";
    assert_eq!(fault(line, &srcs, &half), FaultKind::Synccheck);
    // A lane executes with a member mask that excludes it.
    let line = "shfl.sync.bfly.b32 %d, %a, 1, 0x1f, 0xffff;";
    assert_eq!(fault(line, &srcs, &half), FaultKind::Synccheck);
    // A member reads a lane outside the mask.
    let line = "@%b shfl.sync.idx.b32 %d, %a, 20, 0x1f, 0xffff;";
    assert_eq!(fault(line, &srcs, &half), FaultKind::Synccheck);
}

#[test]
fn disjoint_groups_may_shuffle_with_their_own_member_masks() {
    let line = "shfl.sync.bfly.b32 %d, %a, 1, 0x1f, %b;";
    let masks = rows(|l| vec![value(l), if l < 16 { 0xffff } else { 0xffff_0000 }]);
    let got = eval(line, &["b32"], &["b32", "b32"], &masks);
    assert_eq!(got, rows(|l| vec![value(l ^ 1)]));
}

#[test]
fn bar_warp_sync_member_masks() {
    let all = rows(|l| vec![(l % 2) as u64]);
    let got = eval(
        "bar.warp.sync 0xffffffff;\nmov.b32 %d, 1;",
        &["b32"],
        &["pred"],
        &all,
    );
    assert_eq!(got, rows(|_| vec![1]));
    let line = "mov.b32 %d, 0;\n@!%a bar.warp.sync 0x55555555;\n@!%a mov.b32 %d, 1;";
    assert_eq!(
        eval(line, &["b32"], &["pred"], &all),
        rows(|l| vec![(l % 2 == 0) as u64])
    );
    let line = "bar.warp.sync 0x55555555;\nmov.b32 %d, 1;"; // the odd lanes are not members
    assert_eq!(fault(line, &["pred"], &all), FaultKind::Synccheck);
}

#[test]
fn vote_sync_ballot_all_any_uni() {
    let patterns: [fn(u32) -> bool; 6] = [
        |l| l % 3 == 0,
        |_| true,
        |_| false,
        |l| l == 31,
        |l| l < 16,
        |l| l != 7,
    ];
    let (b32, pred) = (&["b32"][..], &["pred"][..]);
    for p in patterns {
        let input = rows(|l| vec![p(l) as u64]);
        let ballot = (0..32).filter(|&l| p(l)).fold(0u64, |m, l| m | 1 << l);
        let each = |v: u64| rows(|_| vec![v]);
        let vote = |line: &str, dst| eval(line, dst, pred, &input);
        assert_eq!(
            vote("vote.sync.ballot.b32 %d, %a, 0xffffffff;", b32),
            each(ballot)
        );
        assert_eq!(
            vote("vote.sync.ballot.b32 %d, !%a, 0xffffffff;", b32),
            each(!ballot & FULL)
        );
        assert_eq!(
            vote("vote.sync.all.pred %d, %a, 0xffffffff;", pred),
            each((ballot == FULL) as u64)
        );
        assert_eq!(
            vote("vote.sync.any.pred %d, %a, 0xffffffff;", pred),
            each((ballot != 0) as u64)
        );
        let uni = ballot == 0 || ballot == FULL;
        assert_eq!(
            vote("vote.sync.uni.pred %d, %a, 0xffffffff;", pred),
            each(uni as u64)
        );
    }
    // Only lanes 0..15 are members; the others' predicates do not count.
    let input = rows(|l| vec![(l % 2 == 0 || l >= 16) as u64, (l < 16) as u64]);
    let line = "mov.b32 %d, 0xdead;\n@%b vote.sync.ballot.b32 %d, %a, 0xffff;";
    let got = eval(line, &["b32"], &["pred", "pred"], &input);
    assert_eq!(got, rows(|l| vec![if l < 16 { 0x5555 } else { 0xdead }]));
    let line = "setp.eq.u32 %d, 1, 0;\n@%b vote.sync.any.pred %d, !%a, 0xffff;";
    let got = eval(line, &["pred"], &["pred", "pred"], &input);
    assert_eq!(got, rows(|l| vec![(l < 16) as u64]));
    // A warp of 20 threads.
    let input: Vec<Vec<u64>> = (0..20).map(|_| vec![1]).collect();
    let got = eval(
        "vote.sync.ballot.b32 %d, %a, 0xfffff;",
        &["b32"],
        &["pred"],
        &input,
    );
    assert_eq!(got, vec![vec![0xfffff]; 20]);
}

#[test]
fn activemask_and_divergent_branches_rejoin() {
    let got = eval("activemask.b32 %d;", &["b32"], &[], &vec![vec![]; 20]);
    assert_eq!(got, vec![vec![0xfffff]; 20], "a warp of 20 threads");
    let line = "@%a bra ODD;\nactivemask.b32 %d;\nbra JOIN;\nODD:\nactivemask.b32 %d;\nJOIN:\n\
                activemask.b32 %e;";
    let got = eval(
        line,
        &["b32", "b32"],
        &["pred"],
        &rows(|l| vec![(l % 2) as u64]),
    );
    let side = |l: u32| if l % 2 == 1 { 0xaaaa_aaaa } else { 0x5555_5555 };
    assert_eq!(got, rows(|l| vec![side(l), FULL]));
    // A loop whose trip count is the lane: sum 0..lane, then all lanes together again.
    let line = "mov.b32 %d, 0;\nLOOP:\nsetp.ge.u32 %c, %b, %a;\n@%c bra DONE;\n\
                add.u32 %d, %d, %b;\nadd.u32 %b, %b, 1;\nbra LOOP;\nDONE:\nactivemask.b32 %e;";
    let input = rows(|l| vec![l as u64, 0, 0]);
    let got = eval(line, &["b32", "b32"], &["b32", "b32", "pred"], &input);
    assert_eq!(
        got,
        rows(|l| vec![(l * l.saturating_sub(1) / 2) as u64, FULL])
    );
}

#[test]
fn special_registers() {
    let names = [
        "%tid.x", "%tid.y", "%tid.z", "%ntid.x", "%ntid.y", "%ntid.z", "%ctaid.x",
    ];
    let names = names
        .into_iter()
        .chain(["%ctaid.y", "%ctaid.z", "%nctaid.x", "%nctaid.y"]);
    let names: Vec<&str> = (names.chain(["%nctaid.z", "%laneid", "%lanemask_lt"]))
        .chain([
            "%lanemask_le",
            "%lanemask_gt",
            "%lanemask_ge",
            "%lanemask_eq",
        ])
        .collect();
    let n = names.len() as u32;
    // Slot of a thread: block-linear * threads + thread-linear; n words each.
    let mut body = String::from(
        "ld.param.u64 %rd1, [p_out];\nmov.u32 %r1, %tid.x;\nmov.u32 %r2, %tid.y;\n\
         mov.u32 %r3, %tid.z;\nmov.u32 %r4, %ntid.x;\nmov.u32 %r5, %ntid.y;\nmov.u32 %r6, %ntid.z;\n\
         mov.u32 %r7, %ctaid.x;\nmov.u32 %r8, %ctaid.y;\nmov.u32 %r9, %nctaid.x;\n\
         mad.lo.u32 %r10, %r3, %r5, %r2;\nmad.lo.u32 %r10, %r10, %r4, %r1;\n\
         mul.lo.u32 %r11, %r4, %r5;\nmul.lo.u32 %r11, %r11, %r6;\nmad.lo.u32 %r12, %r8, %r9, %r7;\n\
         mad.lo.u32 %r10, %r12, %r11, %r10;\n",
    );
    body += &format!(
        "mul.wide.u32 %rd2, %r10, {};\nadd.s64 %rd1, %rd1, %rd2;\n",
        4 * n
    );
    for (i, name) in names.iter().enumerate() {
        body += &format!(
            "mov.u32 %r13, {name};\nst.global.u32 [%rd1+{}], %r13;\n",
            4 * i
        );
    }
    let text = kernel(".reg .b32 %r<14>;\n.reg .b64 %rd<3>;", &body);
    let (grid, block) = ([3u32, 2, 1], [8u32, 5, 2]);
    let threads = (block.iter().product::<u32>(), grid.iter().product::<u32>());
    let mut gpu = Gpu::new();
    let out = gpu.upload_u32(&vec![0; (threads.0 * threads.1 * n) as usize]);
    gpu.launch(&text, grid, block, &params(&[0, out]), Options::default())
        .unwrap();
    let got = gpu.read_u32(out, (threads.0 * threads.1 * n) as usize);
    for b in 0..threads.1 {
        let ctaid = [b % grid[0], b / grid[0] % grid[1], b / (grid[0] * grid[1])];
        for t in 0..threads.0 {
            let tid = [
                t % block[0],
                t / block[0] % block[1],
                t / (block[0] * block[1]),
            ];
            let lane = t % 32;
            let below = (1u64 << lane) - 1;
            let masks = [below, below << 1 | 1, !(below << 1 | 1), !below, 1 << lane];
            let mut want = [tid, block, ctaid, grid].concat();
            want.push(lane);
            want.extend(masks.map(|m| (m & FULL) as u32));
            let at = ((b * threads.0 + t) * n) as usize;
            assert_eq!(
                got[at..at + n as usize],
                want[..],
                "block {ctaid:?} thread {tid:?}"
            );
        }
    }
}

/// Each thread writes 3t+1 to shared memory, waits at bar.sync, reads its neighbour's value, adds
/// it up across the warp with shfl.down, and lane 0 adds the warp's sum to a global total with an
/// atomic; out[1 + thread] = the neighbour's value, out[0] = the total over the grid.
fn exchange_kernel(barrier: bool) -> String {
    let bar = if barrier { "bar.sync 0;" } else { "" };
    let body = format!(
        "ld.param.u64 %rd1, [p_out];\nmov.u32 %r1, %tid.x;\nmov.u32 %r2, %ntid.x;\n\
         mad.lo.u32 %r3, %r1, 3, 1;\nmov.u32 %r4, s_data;\nshl.b32 %r5, %r1, 2;\n\
         add.u32 %r5, %r4, %r5;\nst.shared.u32 [%r5], %r3;\n{bar}\nadd.u32 %r6, %r1, 1;\n\
         rem.u32 %r6, %r6, %r2;\nshl.b32 %r6, %r6, 2;\nadd.u32 %r6, %r4, %r6;\n\
         ld.shared.u32 %r7, [%r6];\nmov.u32 %r8, %ctaid.x;\nmad.lo.u32 %r8, %r8, %r2, %r1;\n\
         mul.wide.u32 %rd2, %r8, 4;\nadd.s64 %rd2, %rd1, %rd2;\nst.global.u32 [%rd2+4], %r7;\n\
         mov.u32 %r9, %r7;\nshfl.sync.down.b32 %r10, %r9, 16, 0x1f, 0xffffffff;\n\
         add.u32 %r9, %r9, %r10;\nshfl.sync.down.b32 %r10, %r9, 8, 0x1f, 0xffffffff;\n\
         add.u32 %r9, %r9, %r10;\nshfl.sync.down.b32 %r10, %r9, 4, 0x1f, 0xffffffff;\n\
         add.u32 %r9, %r9, %r10;\nshfl.sync.down.b32 %r10, %r9, 2, 0x1f, 0xffffffff;\n\
         add.u32 %r9, %r9, %r10;\nshfl.sync.down.b32 %r10, %r9, 1, 0x1f, 0xffffffff;\n\
         add.u32 %r9, %r9, %r10;\nmov.u32 %r11, %laneid;\nsetp.ne.u32 %p1, %r11, 0;\n\
         @%p1 bra DONE;\nred.global.add.u32 [%rd1], %r9;\nDONE:\nret;"
    );
    let decls =
        ".reg .b32 %r<12>;\n.reg .b64 %rd<3>;\n.reg .pred %p1;\n.shared .align 4 .u32 s_data[128];";
    kernel(decls, &body)
}

fn run_exchange(barrier: bool, opts: Options) -> Result<Vec<u32>, gradmask_vgpu::exec::Fault> {
    let (blocks, threads) = (3u32, 96u32);
    let mut gpu = Gpu::new();
    let out = gpu.upload_u32(&vec![0; 1 + (blocks * threads) as usize]);
    let text = exchange_kernel(barrier);
    gpu.launch(
        &text,
        [blocks, 1, 1],
        [threads, 1, 1],
        &params(&[0, out]),
        opts,
    )?;
    Ok(gpu.read_u32(out, 1 + (blocks * threads) as usize))
}

#[test]
fn bar_sync_orders_shared_memory_and_every_seed_agrees() {
    let neighbour = |t: u32| 3 * ((t + 1) % 96) + 1;
    let mut want: Vec<u32> = vec![3 * (0..96).map(neighbour).sum::<u32>()];
    want.extend((0..3).flat_map(|_| (0..96).map(neighbour)));
    for seed in 0..8 {
        for its in [false, true] {
            let got = run_exchange(true, Options { seed, its });
            let got = got.unwrap_or_else(|f| panic!("seed {seed} its {its}: {f}"));
            assert_eq!(got, want, "seed {seed} its {its}");
        }
    }
    // Without the barrier a thread reads a neighbour's slot before it is written.
    let kind = run_exchange(false, Options::default())
        .expect_err("no barrier")
        .kind;
    assert!(
        matches!(kind, FaultKind::Initcheck | FaultKind::Racecheck),
        "{kind:?}"
    );
}

#[test]
fn bar_sync_misuse_is_a_fault() {
    let half = rows(|l| vec![(l % 2) as u64]);
    // Odd lanes skip the barrier and exit while the even ones wait there.
    let line = "@%a bra SKIP;\nbar.sync 0;\nSKIP:\nmov.b32 %d, 1;";
    assert_eq!(fault(line, &["pred"], &half), FaultKind::Synccheck);
    // Only barrier 0 over the whole block is modelled; others are refused, not approximated.
    assert_eq!(
        fault("bar.sync 1;\nmov.b32 %d, 1;", &["pred"], &half),
        FaultKind::Unsupported
    );
}

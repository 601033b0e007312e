//! Shared helpers for the interpreter's opcode tests: build a PTX kernel around one instruction,
//! run it with one thread per case, and compare bit patterns.
//!
//! `check_table` is the table-driven entry point (one `Case` a line): the instruction names its
//! destinations `%d`, `%e` and its sources `%a`, `%b`, `%c`; each case gives the sources' bits
//! and the destinations' expected bits; `check` takes generated cases. Sources are loaded from
//! global memory by `%tid.x` (an 8-byte slot per operand, read at the register's width),
//! destinations are stored back the same way, so one launch runs every case of an instruction.
//! Predicates travel as 0/1. `%in` holds the address of the thread's source slots (`%a` at
//! `[%in]`), so an atomic can work on memory the case initialised.
//!
//! Expected values are written by hand or computed with Rust's std (IEEE round-to-nearest-even),
//! never by the interpreter's own `exec::alu`.

#![allow(dead_code)]

use gradmask_vgpu::exec::memory::Memory;
use gradmask_vgpu::exec::{self, Fault, LaunchConfig, Options, Traffic};
use gradmask_vgpu::ptx::{self, ir::Module};

/// The canonical NaNs of `exec::alu` (its documented NaN result).
pub const NAN32: u32 = 0x7fff_ffff;
pub const NAN64: u64 = 0x7fff_ffff_ffff_ffff;

/// Fill for output slots, so a lane that stored nothing shows up.
const SENTINEL: u64 = 0x5a5a_5a5a_5a5a_5a5a;

/// A module with one kernel `k(.param .u64 p_in, .param .u64 p_out)`; `decls` and `body` go
/// inside its braces.
pub fn kernel(decls: &str, body: &str) -> String {
    format!(
        ".version 9.0\n.target sm_90\n.address_size 64\n\n\
         .visible .entry k(.param .u64 p_in, .param .u64 p_out)\n{{\n{decls}\n{body}\n}}\n"
    )
}

pub fn parse(text: &str) -> Module {
    match ptx::parse(text) {
        Ok(m) => m,
        Err(e) => panic!("parse failed: {e}\n{text}"),
    }
}

/// Little-endian parameter bytes of 8-byte values (pointers, u64 scalars), in order.
pub fn params(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Device memory and launch bookkeeping for a test.
#[derive(Default)]
pub struct Gpu {
    pub mem: Memory,
    epoch: u32,
    seq: u64,
}

impl Gpu {
    pub fn new() -> Self {
        Self::default()
    }

    /// A buffer holding `bytes` (initialised).
    pub fn upload(&mut self, bytes: &[u8]) -> u64 {
        let addr = self.mem.alloc(bytes.len() as u64);
        self.mem.write(addr, bytes).expect("write");
        addr
    }

    pub fn upload_u32(&mut self, values: &[u32]) -> u64 {
        self.upload(
            &values
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<_>>(),
        )
    }

    pub fn upload_u64(&mut self, values: &[u64]) -> u64 {
        self.upload(
            &values
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<_>>(),
        )
    }

    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        self.mem.read(addr, &mut out).expect("read");
        out
    }

    pub fn read_u32(&self, addr: u64, n: usize) -> Vec<u32> {
        self.read(addr, n * 4)
            .chunks(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    pub fn read_u64(&self, addr: u64, n: usize) -> Vec<u64> {
        self.read(addr, n * 8)
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    /// Runs the first kernel of `text` over `grid` x `block` threads.
    pub fn launch(
        &mut self,
        text: &str,
        grid: [u32; 3],
        block: [u32; 3],
        params: &[u8],
        opts: Options,
    ) -> Result<Traffic, Fault> {
        let module = parse(text);
        self.seq += 1;
        let cfg = LaunchConfig {
            grid,
            block,
            dynamic_shared: 0,
            params,
        };
        exec::run(
            &module.kernels[0],
            &cfg,
            &mut self.mem,
            opts,
            self.seq,
            &mut self.epoch,
        )
    }
}

/// The width in bits of a register type name (`"f32"`, `"b16"`, `"pred"`).
fn reg_bits(ty: &str) -> u32 {
    match ty {
        "pred" => 1,
        _ => ty[1..].parse().expect("register type like b32"),
    }
}

/// The kernel that runs `line` once per thread, reading `srcs.len()` operands and writing
/// `dsts.len()` results, 8-byte slots each, per thread.
pub fn instr_kernel(line: &str, dsts: &[&str], srcs: &[&str]) -> String {
    let (d_names, s_names) = (["%d", "%e"], ["%a", "%b", "%c"]);
    assert!(dsts.len() <= 2 && srcs.len() <= 3);
    let mut decls =
        String::from(".reg .b32 %tid, %t32;\n.reg .b64 %pin, %pout, %off, %in, %out;\n");
    let mut body = format!(
        "ld.param.u64 %pin, [p_in];\nld.param.u64 %pout, [p_out];\nmov.u32 %tid, %tid.x;\n\
         mul.wide.u32 %off, %tid, {};\nadd.s64 %in, %pin, %off;\n\
         mul.wide.u32 %off, %tid, {};\nadd.s64 %out, %pout, %off;\n",
        8 * srcs.len().max(1),
        8 * dsts.len()
    );
    for (i, ty) in srcs.iter().enumerate() {
        let name = s_names[i];
        decls += &format!(".reg .{ty} {name};\n");
        body += &match *ty {
            "pred" => format!(
                "ld.global.u32 %t32, [%in+{}];\nsetp.ne.u32 {name}, %t32, 0;\n",
                8 * i
            ),
            _ => format!("ld.global.b{} {name}, [%in+{}];\n", reg_bits(ty), 8 * i),
        };
    }
    for (i, ty) in dsts.iter().enumerate() {
        decls += &format!(".reg .{ty} {};\n", d_names[i]);
    }
    body += line;
    body += "\n";
    for (i, ty) in dsts.iter().enumerate() {
        let name = d_names[i];
        body += &match *ty {
            "pred" => format!(
                "selp.u32 %t32, 1, 0, {name};\nst.global.u32 [%out+{}], %t32;\n",
                8 * i
            ),
            _ => format!("st.global.b{} [%out+{}], {name};\n", reg_bits(ty), 8 * i),
        };
    }
    kernel(&decls, &body)
}

/// Runs `line` once per input row (one thread each, one block) and returns each thread's
/// destination bits, zero-extended from the register width.
pub fn eval(line: &str, dsts: &[&str], srcs: &[&str], rows: &[Vec<u64>]) -> Vec<Vec<u64>> {
    try_eval(line, dsts, srcs, rows, Options::default())
        .unwrap_or_else(|f| panic!("`{line}`: launch failed: {f}"))
}

/// `eval` under the given scheduler options; a fault is returned.
pub fn try_eval(
    line: &str,
    dsts: &[&str],
    srcs: &[&str],
    rows: &[Vec<u64>],
    opts: Options,
) -> Result<Vec<Vec<u64>>, Fault> {
    let n = rows.len();
    assert!(n > 0 && n <= 1024, "one block of threads");
    let text = instr_kernel(line, dsts, srcs);
    let mut gpu = Gpu::new();
    let n_in = srcs.len().max(1);
    let mut input = vec![0u64; n * n_in];
    for (t, row) in rows.iter().enumerate() {
        assert_eq!(row.len(), srcs.len());
        input[t * n_in..t * n_in + row.len()].copy_from_slice(row);
    }
    let p_in = gpu.upload_u64(&input);
    let p_out = gpu.upload_u64(&vec![SENTINEL; n * dsts.len()]);
    let args = params(&[p_in, p_out]);
    gpu.launch(&text, [1, 1, 1], [n as u32, 1, 1], &args, opts)?;
    let out = gpu.read_u64(p_out, n * dsts.len());
    let width = |ty: &str| match reg_bits(ty) {
        1 => 0xffff_ffff,
        b => u64::MAX >> (64 - b),
    };
    Ok(out
        .chunks(dsts.len())
        .map(|c| c.iter().zip(dsts).map(|(v, ty)| v & width(ty)).collect())
        .collect())
}

/// One table row: the instruction (destinations `%d`, `%e`; sources `%a`, `%b`, `%c`), its
/// register types as `"dsts = srcs"` (`"pred pred = b32 b32 pred"`), the sources' bits and the
/// destinations' expected bits.
pub type Case = (&'static str, &'static str, &'static [u64], &'static [u64]);

fn signature(sig: &str) -> (Vec<&str>, Vec<&str>) {
    let (d, s) = sig.split_once('=').expect("signature `dsts = srcs`");
    (
        d.split_whitespace().collect(),
        s.split_whitespace().collect(),
    )
}

/// The mismatches of running `line` once per case (one launch for all of them).
fn mismatches(line: &str, sig: &str, cases: &[(Vec<u64>, Vec<u64>)]) -> Vec<String> {
    let (dsts, srcs) = signature(sig);
    let rows: Vec<Vec<u64>> = cases.iter().map(|(s, _)| s.clone()).collect();
    let got = eval(line, &dsts, &srcs, &rows);
    cases
        .iter()
        .zip(&got)
        .filter(|((_, want), got)| want != *got)
        .map(|((src, want), got)| {
            let (src, want, got) = (hex(src), hex(want), hex(got));
            format!("  `{line}` sources {src}: expected {want}, got {got}")
        })
        .collect()
}

fn hex(values: &[u64]) -> String {
    let parts: Vec<String> = values.iter().map(|v| format!("{v:#x}")).collect();
    format!("[{}]", parts.join(", "))
}

fn report(failures: Vec<String>, total: usize) {
    assert!(
        failures.is_empty(),
        "{} of {total} cases wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Checks generated cases of one instruction; every mismatch is reported.
pub fn check(line: &str, sig: &str, cases: &[(Vec<u64>, Vec<u64>)]) {
    report(mismatches(line, sig, cases), cases.len());
}

/// Checks a table; consecutive rows of the same instruction run in one launch.
pub fn check_table(table: &[Case]) {
    let mut failures = Vec::new();
    let mut i = 0;
    while i < table.len() {
        let (line, sig, _, _) = table[i];
        let n = table[i..]
            .iter()
            .take_while(|r| r.0 == line && r.1 == sig)
            .count();
        let cases: Vec<(Vec<u64>, Vec<u64>)> = table[i..i + n]
            .iter()
            .map(|r| (r.2.to_vec(), r.3.to_vec()))
            .collect();
        failures.extend(mismatches(line, sig, &cases));
        i += n;
    }
    report(failures, table.len());
}

/// Bits of an f32 / f64 with NaN replaced by the canonical NaN (the interpreter's NaN result).
pub fn f32b(x: f32) -> u64 {
    if x.is_nan() {
        NAN32 as u64
    } else {
        x.to_bits() as u64
    }
}

pub fn f64b(x: f64) -> u64 {
    if x.is_nan() {
        NAN64
    } else {
        x.to_bits()
    }
}

/// The error `ptx::parse` gives for a kernel whose body holds `body` (registers `%r<4>`,
/// `%rd<4>`, `%f<4>`, `%fd<4>`, `%p<4>`, `%h<4>` are declared), and the 1-based line of the
/// first body line containing `marker`.
pub fn parse_error(body: &str, marker: &str) -> (ptx::ParseError, u32) {
    let decls = ".reg .b32 %r<4>;\n.reg .b64 %rd<4>;\n.reg .f32 %f<4>;\n.reg .f64 %fd<4>;\n\
                 .reg .pred %p<4>;\n.reg .b16 %h<4>;";
    let text = kernel(decls, body);
    let line = text
        .lines()
        .position(|l| l.contains(marker))
        .expect("marker in the text") as u32
        + 1;
    match ptx::parse(&text) {
        Ok(_) => panic!("parse accepted:\n{text}"),
        Err(e) => (e, line),
    }
}

/// Asserts that each line is refused with a `ParseError` whose token and reason name its opcode.
pub fn refused(lines: &[&str]) {
    for bad in lines {
        let (e, _) = parse_error(bad, bad);
        let opcode = bad.split_whitespace().next().unwrap();
        let named = e.token.contains(opcode) && e.reason.contains(opcode);
        assert!(named, "`{bad}`: token `{}`, {e}", e.token);
    }
}

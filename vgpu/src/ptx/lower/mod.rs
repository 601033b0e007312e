//! One instruction's opcode and raw operands to an `ir::Op`. Every modifier is either understood
//! or rejected: an instruction whose semantics the executor does not implement exactly is an
//! "unsupported instruction" error, never a silent approximation.
//!
//! `operands`: opcodes, modifiers, literals and operands; one file per family of instructions:
//! `arith` (integer and float arithmetic, comparisons, conversions), `memory` (loads, stores,
//! atomics, address conversions), `control` (moves, branches, barriers, fences, shuffles, votes).

mod arith;
mod control;
mod memory;
mod operands;

use super::ir::Op;
use super::parse::Sym;
use operands::{unsupported, Opcode, Ops};

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

pub(super) type Resolve<'a> = dyn Fn(&str) -> Option<Sym> + 'a;

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
    match base {
        "mov" => control::mov(&oc, &o, opcode),
        "add" | "sub" | "mul" | "min" | "max" | "div" | "rem" | "and" | "or" | "xor" | "shl"
        | "shr" => arith::binary(&oc, &o, opcode).map(Lowered::Op),
        "mad" => arith::mad(&oc, &o, opcode),
        "fma" => arith::fma(&oc, &o, opcode),
        "not" | "neg" | "abs" | "popc" | "clz" | "brev" | "bfind" | "sqrt" | "cnot" => {
            arith::unary(&oc, &o, opcode).map(Lowered::Op)
        }
        "setp" => arith::setp(&oc, &o, opcode),
        "selp" => arith::selp(&oc, &o, opcode),
        "cvt" => arith::cvt(&oc, &o, opcode).map(Lowered::Op),
        "cvta" => memory::cvta(&oc, &o, opcode),
        "ld" => memory::ld(&oc, &o, opcode, used_mask),
        "st" => memory::st(&oc, &o, opcode),
        "atom" | "red" => memory::atom(&oc, &o, opcode).map(Lowered::Op),
        "membar" | "fence" => control::fence(&oc, &o, opcode),
        "bar" | "barrier" => control::bar(&oc, &o, opcode),
        "shfl" => control::shfl(&oc, &o, opcode),
        "vote" => control::vote(&oc, &o, opcode),
        "activemask" => control::activemask(&oc, &o, opcode),
        "bra" => control::bra(&oc, &o, opcode),
        "ret" | "exit" => control::exit(&oc, &o, opcode),
        _ => Err(unsupported(opcode)),
    }
}

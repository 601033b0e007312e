//! One `.entry` kernel: parameters, performance directives, the body with its register scopes,
//! labels and instructions (lowered by `lower`), then register packing (`regalloc`).

use std::collections::HashMap;

use super::ir::{Instr, Kernel, Param, Reg, Ty};
use super::lex::{Tok, Token};
use super::lower::{lower, Lowered, RawOperand};
use super::parse::{align_up, parse_int, var_decl, Cursor, Sym, VarDecl};
use super::ParseError;

struct Body {
    scopes: Vec<HashMap<String, Sym>>,
    reg_bits: Vec<u8>,
    labels: HashMap<String, u32>,
    instrs: Vec<Instr>,
    text: Vec<String>,
    /// (instruction index, label) of branches to resolve.
    fixups: Vec<(usize, String, u32)>,
}

impl Body {
    fn lookup(&self, name: &str) -> Option<Sym> {
        self.scopes.iter().rev().find_map(|s| s.get(name).copied())
    }
    fn declare_reg(&mut self, name: String, bits: u8) {
        let reg = self.reg_bits.len() as Reg;
        self.reg_bits.push(bits);
        self.scopes.last_mut().unwrap().insert(name, Sym::Reg(reg));
    }
}

pub(super) fn entry(
    c: &mut Cursor,
    module_shared: &[VarDecl],
    opcodes: &mut std::collections::BTreeSet<String>,
) -> Result<Kernel, ParseError> {
    let name = c.ident()?.to_string();
    let mut body = Body {
        scopes: vec![HashMap::new()],
        reg_bits: Vec::new(),
        labels: HashMap::new(),
        instrs: Vec::new(),
        text: Vec::new(),
        fixups: Vec::new(),
    };
    // Parameters.
    let mut params = Vec::new();
    let mut param_bytes = 0u32;
    c.punct('(')?;
    if !c.eat(')') {
        loop {
            if c.ident()? != ".param" {
                return Err(c.err("expected .param"));
            }
            let decl = var_decl(c)?;
            let offset = align_up(param_bytes, decl.align);
            param_bytes = offset + decl.bytes;
            body.scopes[0].insert(decl.name.clone(), Sym::Param(offset));
            params.push(Param {
                name: decl.name,
                offset,
                size: decl.bytes,
            });
            if c.eat(')') {
                break;
            }
            c.punct(',')?;
        }
    }
    // Performance directives.
    let mut max_ntid = None;
    while let Some(Tok::Ident(d)) = c.peek() {
        match d.as_str() {
            ".maxntid" | ".reqntid" => {
                c.next();
                let mut dims = [1u32; 3];
                dims[0] = c.number()? as u32;
                for dim in dims.iter_mut().skip(1) {
                    if !c.eat(',') {
                        break;
                    }
                    *dim = c.number()? as u32;
                }
                max_ntid = Some(dims);
            }
            ".minnctapersm" | ".maxnreg" | ".maxnctapersm" => {
                c.next();
                c.number()?;
            }
            _ => return Err(c.err("unsupported kernel directive")),
        }
    }
    // Shared layout: module-level variables, then the kernel's own (added while parsing).
    let mut shared_bytes = 0u32;
    let mut dynamic = Vec::new();
    for decl in module_shared {
        if decl.bytes == 0 {
            dynamic.push(decl);
            continue;
        }
        let offset = align_up(shared_bytes, decl.align);
        shared_bytes = offset + decl.bytes;
        body.scopes[0].insert(decl.name.clone(), Sym::Shared(offset));
    }
    c.punct('{')?;
    let mut depth = 1;
    let mut used_mask = None;
    let mut unsupported: Vec<ParseError> = Vec::new();
    while depth > 0 {
        let line = c.line();
        let Some(t) = c.next() else {
            return Err(c.err("unterminated kernel body"));
        };
        match t {
            Tok::Punct('{') => {
                depth += 1;
                body.scopes.push(HashMap::new());
            }
            Tok::Punct('}') => {
                depth -= 1;
                if depth > 0 {
                    body.scopes.pop();
                }
            }
            Tok::Ident(s) if s == ".reg" => {
                let ty_name = c.ident()?;
                let ty = ty_name
                    .strip_prefix('.')
                    .and_then(Ty::parse)
                    .ok_or_else(|| c.err("unsupported register type"))?;
                loop {
                    let rname = c.ident()?.to_string();
                    if c.eat('<') {
                        let n = c.number()?;
                        c.punct('>')?;
                        for i in 0..n {
                            body.declare_reg(format!("{rname}{i}"), ty.bits() as u8);
                        }
                    } else {
                        body.declare_reg(rname, ty.bits() as u8);
                    }
                    if !c.eat(',') {
                        break;
                    }
                }
                c.punct(';')?;
            }
            Tok::Ident(s) if s == ".shared" => {
                let decl = var_decl(c)?;
                c.punct(';')?;
                let offset = align_up(shared_bytes, decl.align);
                shared_bytes = offset + decl.bytes;
                body.scopes
                    .last_mut()
                    .unwrap()
                    .insert(decl.name, Sym::Shared(offset));
            }
            Tok::Ident(s) if s == ".pragma" => {
                if let Some(Tok::Str(p)) = c.next() {
                    if let Some(m) = p.strip_prefix("used_bytes_mask ") {
                        used_mask = parse_int(m.trim()).map(|v| v as u32);
                    }
                }
                c.punct(';')?;
            }
            Tok::Ident(s) if s == ".local" => {
                return Err(ParseError {
                    line,
                    token: s.clone(),
                    reason: ".local variables are not supported".into(),
                })
            }
            Tok::Ident(s) if c.peek() == Some(&Tok::Punct(':')) => {
                c.next();
                body.labels.insert(s.clone(), body.instrs.len() as u32);
            }
            Tok::Ident(_) | Tok::Punct('@') => {
                c.pos -= 1;
                let start = c.pos;
                match instruction(c, &mut body, used_mask.take(), opcodes) {
                    Ok(()) => {}
                    Err(e) if e.reason.starts_with("unsupported instruction") => {
                        if !unsupported.iter().any(|u: &ParseError| u.token == e.token) {
                            unsupported.push(e);
                        }
                        c.pos = start;
                        c.skip_to_semicolon();
                    }
                    Err(e) => return Err(e),
                }
            }
            _ => {
                c.pos -= 1;
                return Err(c.err("unexpected token in kernel body"));
            }
        }
    }
    if let Some(first) = unsupported.first() {
        let each: Vec<String> = unsupported
            .iter()
            .map(|u| format!("{} (line {}: {})", u.token, u.line, u.reason))
            .collect();
        return Err(ParseError {
            line: first.line,
            token: unsupported
                .iter()
                .map(|u| u.token.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            reason: format!(
                "unsupported instruction(s) in kernel {name}: {}",
                each.join("; ")
            ),
        });
    }
    // Dynamic shared memory starts after the static variables, 16-byte aligned.
    for decl in dynamic {
        let offset = align_up(shared_bytes, decl.align.max(16));
        body.scopes[0].insert(decl.name.clone(), Sym::Shared(offset));
    }
    for (at, label, line) in std::mem::take(&mut body.fixups) {
        let target = *body.labels.get(&label).ok_or(ParseError {
            line,
            token: label.clone(),
            reason: "branch to an unknown label".into(),
        })?;
        if let super::ir::Op::Bra { target: t } = &mut body.instrs[at].op {
            *t = target;
        }
    }
    let mut instrs = body.instrs;
    for ins in &mut instrs {
        if let super::ir::Op::Ld { dsts, reg_bits, .. } = &mut ins.op {
            if let Some(Some(d)) = dsts.first() {
                *reg_bits = body.reg_bits[*d as usize];
            }
        }
    }
    let declared_regs = body.reg_bits.len();
    let n_regs = super::regalloc::compact(&mut instrs, declared_regs);
    Ok(Kernel {
        name,
        params,
        param_bytes,
        shared_bytes,
        instrs,
        n_regs,
        declared_regs,
        text: body.text,
        max_ntid,
    })
}

/// One instruction statement, `[@[!]%p] opcode operands ;`.
fn instruction(
    c: &mut Cursor,
    body: &mut Body,
    used_mask: Option<u32>,
    opcodes: &mut std::collections::BTreeSet<String>,
) -> Result<(), ParseError> {
    let line = c.line();
    let start = c.pos;
    let mut guard = None;
    if c.eat('@') {
        let neg = c.eat('!');
        let pname = c.ident()?;
        match body.lookup(pname) {
            Some(Sym::Reg(r)) => guard = Some((r, neg)),
            _ => return Err(c.err("guard is not a register")),
        }
    }
    let opcode = c.ident()?.to_string();
    opcodes.insert(opcode.clone());
    let mut operands = Vec::new();
    if !c.eat(';') {
        loop {
            operands.push(raw_operand(c)?);
            if c.eat(';') {
                break;
            }
            c.punct(',')?;
        }
    }
    let text = source_text(&c.toks[start..c.pos]);
    let err = |reason: String| ParseError {
        line,
        token: opcode.clone(),
        reason,
    };
    let resolve = |name: &str| body.lookup(name);
    let lowered = lower(&opcode, &operands, &resolve, used_mask).map_err(err)?;
    let op = match lowered {
        Lowered::Op(op) => op,
        Lowered::Branch(label) => {
            body.fixups.push((body.instrs.len(), label, line));
            super::ir::Op::Bra { target: 0 }
        }
    };
    body.instrs.push(Instr { guard, op, line });
    body.text.push(text);
    Ok(())
}

fn raw_operand(c: &mut Cursor) -> Result<RawOperand, ParseError> {
    match c.peek() {
        Some(Tok::Punct('!')) => {
            c.next();
            Ok(RawOperand::Not(Box::new(raw_operand(c)?)))
        }
        Some(Tok::Punct('-')) => {
            c.next();
            match c.next() {
                Some(Tok::Num(s)) => Ok(RawOperand::Num {
                    neg: true,
                    text: s.clone(),
                }),
                _ => Err(c.err("expected a number after '-'")),
            }
        }
        Some(Tok::Num(s)) => {
            c.next();
            Ok(RawOperand::Num {
                neg: false,
                text: s.clone(),
            })
        }
        Some(Tok::Punct('{')) => {
            c.next();
            let mut parts = Vec::new();
            loop {
                parts.push(raw_operand(c)?);
                if c.eat('}') {
                    break;
                }
                c.punct(',')?;
            }
            Ok(RawOperand::Vec(parts))
        }
        Some(Tok::Punct('[')) => {
            c.next();
            let mut base = None;
            let mut offset = 0i64;
            match c.next() {
                Some(Tok::Ident(s)) => base = Some(s.clone()),
                Some(Tok::Num(s)) => {
                    offset = parse_int(s).ok_or_else(|| c.err("bad offset"))? as i64
                }
                _ => return Err(c.err("bad address")),
            }
            if c.eat('+') {
                let neg = c.eat('-');
                let v = c.number()? as i64;
                offset += if neg { -v } else { v };
            } else if c.eat('-') {
                offset -= c.number()? as i64;
            }
            c.punct(']')?;
            Ok(RawOperand::Addr { base, offset })
        }
        Some(Tok::Ident(s)) => {
            c.next();
            if c.eat('|') {
                let second = c.ident()?.to_string();
                return Ok(RawOperand::Pair(s.clone(), second));
            }
            if s == "_" {
                return Ok(RawOperand::Sink);
            }
            Ok(RawOperand::Name(s.clone()))
        }
        _ => Err(c.err("bad operand")),
    }
}

fn source_text(toks: &[Token]) -> String {
    let mut s = String::new();
    for (i, t) in toks.iter().enumerate() {
        let piece = match &t.tok {
            Tok::Ident(x) | Tok::Num(x) => x.clone(),
            Tok::Str(x) => format!("\"{x}\""),
            Tok::Punct(p) => p.to_string(),
        };
        let glue = matches!(t.tok, Tok::Punct(',' | ';' | ']' | '}' | '|' | '+'))
            || matches!(
                toks.get(i.wrapping_sub(1)).map(|t| &t.tok),
                Some(Tok::Punct('[' | '{' | '|' | '+' | '-' | '!' | '@'))
            );
        if !s.is_empty() && !glue {
            s.push(' ');
        }
        s.push_str(&piece);
    }
    s
}

//! PTX text to `ir::Module`: the module's directives and shared variables, and the token cursor
//! and declaration helpers `kernel.rs` uses for each `.entry`.

use super::ir::{Module, Reg, Ty};
use super::lex::{tokenize, Tok, Token};
use super::ParseError;

/// What a name in a kernel body refers to.
#[derive(Clone, Copy, Debug)]
pub enum Sym {
    Reg(Reg),
    /// Offset in the kernel's shared window.
    Shared(u32),
    /// Offset in the kernel's parameter buffer.
    Param(u32),
}

pub(super) struct Cursor<'a> {
    pub toks: &'a [Token],
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn peek(&self) -> Option<&'a Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }
    pub(super) fn line(&self) -> u32 {
        self.toks
            .get(self.pos.min(self.toks.len().saturating_sub(1)))
            .map_or(0, |t| t.line)
    }
    pub(super) fn next(&mut self) -> Option<&'a Tok> {
        let t = self.toks.get(self.pos).map(|t| &t.tok);
        self.pos += 1;
        t
    }
    pub(super) fn err(&self, reason: impl Into<String>) -> ParseError {
        let token = match self.peek() {
            Some(Tok::Ident(s)) | Some(Tok::Num(s)) | Some(Tok::Str(s)) => s.clone(),
            Some(Tok::Punct(c)) => c.to_string(),
            None => "end of input".into(),
        };
        ParseError {
            line: self.line(),
            token,
            reason: reason.into(),
        }
    }
    pub(super) fn punct(&mut self, c: char) -> Result<(), ParseError> {
        if self.peek() == Some(&Tok::Punct(c)) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(format!("expected '{c}'")))
        }
    }
    pub(super) fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Punct(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    pub(super) fn ident(&mut self) -> Result<&'a str, ParseError> {
        match self.peek() {
            Some(Tok::Ident(s)) => {
                self.pos += 1;
                Ok(s)
            }
            _ => Err(self.err("expected a name")),
        }
    }
    pub(super) fn number(&mut self) -> Result<u64, ParseError> {
        match self.peek() {
            Some(Tok::Num(s)) => {
                let v = parse_int(s).ok_or_else(|| self.err("bad integer"))?;
                self.pos += 1;
                Ok(v)
            }
            _ => Err(self.err("expected a number")),
        }
    }
    pub(super) fn skip_to_semicolon(&mut self) {
        while let Some(t) = self.next() {
            if *t == Tok::Punct(';') {
                break;
            }
        }
    }
}

/// An integer literal: decimal, 0x hex, 0b binary, 0-prefixed octal, optional U suffix.
pub fn parse_int(s: &str) -> Option<u64> {
    let s = s.strip_suffix('U').unwrap_or(s);
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if let Some(b) = s.strip_prefix("0b").or_else(|| s.strip_prefix("0B")) {
        u64::from_str_radix(b, 2).ok()
    } else if s.len() > 1 && s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit()) {
        u64::from_str_radix(&s[1..], 8).ok()
    } else {
        s.parse().ok()
    }
}

/// A variable declaration's alignment, type and element count (`.align 4 .b8 name[8192]`).
pub(super) struct VarDecl {
    pub name: String,
    pub align: u32,
    pub bytes: u32,
}

pub(super) fn var_decl(c: &mut Cursor) -> Result<VarDecl, ParseError> {
    let mut align = 0;
    let mut ty = None;
    loop {
        match c.peek() {
            Some(Tok::Ident(s)) if s == ".align" => {
                c.next();
                align = c.number()? as u32;
            }
            Some(Tok::Ident(s)) if s.starts_with('.') => {
                let t = Ty::parse(&s[1..]).ok_or_else(|| c.err("unsupported variable type"))?;
                ty = Some(t);
                c.next();
            }
            _ => break,
        }
    }
    let ty = ty.ok_or_else(|| c.err("variable without a type"))?;
    let name = c.ident()?.to_string();
    let mut count = 1u32;
    if c.eat('[') {
        count = if c.peek() == Some(&Tok::Punct(']')) {
            0
        } else {
            c.number()? as u32
        };
        c.punct(']')?;
    }
    if align == 0 {
        align = ty.bytes();
    }
    Ok(VarDecl {
        name,
        align,
        bytes: ty.bytes() * count,
    })
}

pub(super) fn align_up(x: u32, a: u32) -> u32 {
    x.div_ceil(a.max(1)) * a.max(1)
}

/// Skips a kernel's or function's signature and body: up to the first `{` (or a `;` ending a
/// declaration without a body), then to its matching `}`.
fn skip_body(c: &mut Cursor) -> Result<(), ParseError> {
    loop {
        match c.next() {
            Some(Tok::Punct('{')) => break,
            Some(Tok::Punct(';')) => return Ok(()),
            Some(_) => {}
            None => return Err(c.err("a kernel or function without a body")),
        }
    }
    let mut depth = 1;
    while depth > 0 {
        match c.next() {
            Some(Tok::Punct('{')) => depth += 1,
            Some(Tok::Punct('}')) => depth -= 1,
            Some(_) => {}
            None => return Err(c.err("an unclosed body")),
        }
    }
    Ok(())
}

/// Skips a module-scope variable declaration, initialiser included, through its `;`.
fn skip_declaration(c: &mut Cursor) -> Result<(), ParseError> {
    let mut depth = 0;
    loop {
        match c.next() {
            Some(Tok::Punct('{')) => depth += 1,
            Some(Tok::Punct('}')) => depth -= 1,
            Some(Tok::Punct(';')) if depth == 0 => return Ok(()),
            Some(_) => {}
            None => return Err(c.err("a declaration without its ';'")),
        }
    }
}

/// Parses a whole PTX module that every kernel of must run: the first kernel (or `.func`) the
/// interpreter cannot run is the error. Every instruction it lacks in that kernel is reported, not
/// only the first: `ParseError::reason` then lists them.
pub fn parse(text: &str) -> Result<Module, ParseError> {
    let mut module = parse_lenient(text)?;
    if module.unloadable.is_empty() {
        Ok(module)
    } else {
        Err(module.unloadable.swap_remove(0).1)
    }
}

/// Parses a PTX module, setting aside the kernels the interpreter cannot run and the `.func`s
/// (`Module::unloadable`) instead of failing: what the driver loads (candle's modules mix kernels
/// it can run with some it cannot). Malformed module-level PTX is still an error.
pub fn parse_lenient(text: &str) -> Result<Module, ParseError> {
    let toks = tokenize(text)?;
    let mut c = Cursor {
        toks: &toks,
        pos: 0,
    };
    let mut module = Module::default();
    let mut module_shared: Vec<VarDecl> = Vec::new();
    while let Some(t) = c.peek() {
        let Tok::Ident(d) = t else {
            return Err(c.err("expected a directive"));
        };
        match d.as_str() {
            ".version" | ".address_size" => {
                c.next();
                c.next();
            }
            ".target" => {
                c.next();
                c.ident()?;
                while c.eat(',') {
                    c.ident()?;
                }
            }
            ".visible" | ".weak" => {
                c.next();
            }
            ".extern" => {
                c.next();
                if c.peek() == Some(&Tok::Ident(".shared".into())) {
                    c.next();
                    let decl = var_decl(&mut c)?;
                    c.punct(';')?;
                    module_shared.push(VarDecl { bytes: 0, ..decl });
                }
            }
            ".shared" => {
                c.next();
                let decl = var_decl(&mut c)?;
                c.punct(';')?;
                module_shared.push(decl);
            }
            ".entry" => {
                c.next();
                let start = c.pos;
                match super::kernel::entry(&mut c, &module_shared, &mut module.opcodes) {
                    Ok(kernel) => module.kernels.push(kernel),
                    Err(e) => {
                        c.pos = start;
                        let name = c.ident().map(str::to_string).unwrap_or_default();
                        skip_body(&mut c)?;
                        module.unloadable.push((name, e));
                    }
                }
            }
            ".func" => {
                // A device function: kernels that call it fail at their `call` (unloadable).
                let e = c.err(".func is not supported (only .entry kernels)");
                c.next();
                skip_body(&mut c)?;
                module.unloadable.push((".func".into(), e));
            }
            ".global" | ".const" | ".local" => {
                // Kernels that use the variable fail on its name (unloadable).
                let e = c.err("module-scope .global/.const/.local variables are not supported");
                skip_declaration(&mut c)?;
                module.unloadable.push((d.clone(), e));
            }
            _ => return Err(c.err("unsupported directive")),
        }
    }
    Ok(module)
}

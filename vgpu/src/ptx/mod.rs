//! PTX front end: tokens (`lex`), the module's directives (`parse`), each kernel's body
//! (`kernel`), instructions (`lower`), register packing (`regalloc`), and the decoded form the
//! executor runs (`ir`).

pub mod ir;
mod kernel;
mod lex;
mod lower;
mod parse;
pub mod regalloc;

pub use parse::{parse, parse_lenient};

/// PTX the interpreter cannot read: the line, the token, and why. The driver answers
/// `CUDA_ERROR_INVALID_PTX` and prints this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: u32,
    pub token: String,
    pub reason: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PTX line {}, at `{}`: {}",
            self.line, self.token, self.reason
        )
    }
}

//! The decoded form of a kernel: registers are indices, symbols are offsets, branch targets are
//! instruction indices. The executor (`crate::exec`) runs this, one warp-instruction at a time.

/// A PTX scalar type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    B8,
    B16,
    B32,
    B64,
    U8,
    U16,
    U32,
    U64,
    S8,
    S16,
    S32,
    S64,
    F16,
    Bf16,
    F32,
    F64,
    Pred,
}

impl Ty {
    pub fn parse(s: &str) -> Option<Ty> {
        Some(match s {
            "b8" => Ty::B8,
            "b16" => Ty::B16,
            "b32" => Ty::B32,
            "b64" => Ty::B64,
            "u8" => Ty::U8,
            "u16" => Ty::U16,
            "u32" => Ty::U32,
            "u64" => Ty::U64,
            "s8" => Ty::S8,
            "s16" => Ty::S16,
            "s32" => Ty::S32,
            "s64" => Ty::S64,
            "f16" => Ty::F16,
            "bf16" => Ty::Bf16,
            "f32" => Ty::F32,
            "f64" => Ty::F64,
            "pred" => Ty::Pred,
            _ => return None,
        })
    }

    pub fn bits(self) -> u32 {
        match self {
            Ty::Pred => 1,
            Ty::B8 | Ty::U8 | Ty::S8 => 8,
            Ty::B16 | Ty::U16 | Ty::S16 | Ty::F16 | Ty::Bf16 => 16,
            Ty::B32 | Ty::U32 | Ty::S32 | Ty::F32 => 32,
            Ty::B64 | Ty::U64 | Ty::S64 | Ty::F64 => 64,
        }
    }

    pub fn bytes(self) -> u32 {
        self.bits().div_ceil(8)
    }

    pub fn signed(self) -> bool {
        matches!(self, Ty::S8 | Ty::S16 | Ty::S32 | Ty::S64)
    }

    pub fn float(self) -> bool {
        matches!(self, Ty::F16 | Ty::Bf16 | Ty::F32 | Ty::F64)
    }

    /// The mask of the type's bits in a 64-bit register slot.
    pub fn mask(self) -> u64 {
        match self.bits() {
            64 => u64::MAX,
            b => (1u64 << b) - 1,
        }
    }
}

pub type Reg = u32;

/// A source operand: a register, or an immediate's bits at the instruction's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Src {
    Reg(Reg),
    Imm(u64),
}

/// A predicate source, possibly negated (`!%p1`); an immediate predicate is 0 or 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PredSrc {
    pub src: Src,
    pub neg: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    Global,
    Shared,
    Param,
    Generic,
}

/// `[base + offset]`; a symbol (shared variable, parameter) is already folded into `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addr {
    pub base: Option<Reg>,
    pub offset: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Special {
    Tid(u8),
    Ntid(u8),
    Ctaid(u8),
    Nctaid(u8),
    LaneId,
    WarpId,
    NWarpId,
    LanemaskLt,
    LanemaskLe,
    LanemaskGt,
    LanemaskGe,
    LanemaskEq,
    Clock,
    Clock64,
    SmId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntOp {
    Add,
    Sub,
    MulLo,
    MulHi,
    And,
    Or,
    Xor,
    Shl,
    Shr,
    Min,
    Max,
    Div,
    Rem,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatOp {
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    Not,
    Neg,
    Abs,
    Popc,
    Clz,
    Brev,
    Bfind { shiftamt: bool },
    Sqrt,
    FNeg,
    FAbs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    // Unordered float comparisons: true when either operand is NaN.
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoolOp {
    And,
    Or,
    Xor,
}

/// Rounding of `cvt`: to nearest even, toward zero, down, up; `integer` for the `.rni`-style
/// modes of a float-to-float conversion that round to an integral value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rnd {
    None,
    Rn,
    Rz,
    Rm,
    Rp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtomOp {
    Add,
    Min,
    Max,
    Inc,
    Dec,
    And,
    Or,
    Xor,
    Exch,
    Cas,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShflMode {
    Up,
    Down,
    Bfly,
    Idx,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteMode {
    Ballot,
    All,
    Any,
    Uni,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Mov {
        ty: Ty,
        dst: Reg,
        src: Src,
    },
    Special {
        dst: Reg,
        sp: Special,
    },
    /// `mov.b64 %rd, {%r1, %r2}`: parts from least significant.
    Pack {
        dst: Reg,
        parts: Vec<Src>,
        part_bits: u32,
    },
    /// `mov.b64 {%r1, %r2}, %rd` (`None`: the sink `_`).
    Unpack {
        dsts: Vec<Option<Reg>>,
        src: Src,
        part_bits: u32,
    },
    Int {
        op: IntOp,
        ty: Ty,
        dst: Reg,
        a: Src,
        b: Src,
    },
    /// `mul.wide`: `ty` is the source type; the result has twice its width.
    MulWide {
        ty: Ty,
        dst: Reg,
        a: Src,
        b: Src,
    },
    /// `mad.lo` / `mad.hi` / `mad.wide` (`wide`: `ty` is the source type).
    Mad {
        ty: Ty,
        hi: bool,
        wide: bool,
        dst: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    Unary {
        op: UnOp,
        ty: Ty,
        dst: Reg,
        a: Src,
    },
    Float {
        op: FloatOp,
        ty: Ty,
        dst: Reg,
        a: Src,
        b: Src,
    },
    Fma {
        ty: Ty,
        dst: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    Setp {
        cmp: Cmp,
        ty: Ty,
        dst: Reg,
        dst_not: Option<Reg>,
        a: Src,
        b: Src,
        combine: Option<(BoolOp, PredSrc)>,
    },
    Selp {
        ty: Ty,
        dst: Reg,
        a: Src,
        b: Src,
        pred: PredSrc,
    },
    Pred {
        op: Option<BoolOp>,
        dst: Reg,
        a: PredSrc,
        b: PredSrc,
    },
    Cvt {
        dst_ty: Ty,
        src_ty: Ty,
        rnd: Rnd,
        integral: bool,
        sat: bool,
        dst: Reg,
        src: Src,
    },
    /// `cvta.to.<space>` (`to`) or `cvta.<space>`: between generic and `space` addresses.
    Cvta {
        space: Space,
        to: bool,
        dst: Reg,
        src: Src,
    },
    Ld {
        space: Space,
        ty: Ty,
        dsts: Vec<Option<Reg>>,
        addr: Addr,
        non_coherent: bool,
        used_mask: u32,
        /// Declared bits of the destination registers (a narrower load extends to them).
        reg_bits: u8,
    },
    St {
        space: Space,
        ty: Ty,
        srcs: Vec<Src>,
        addr: Addr,
    },
    /// `atom` (with `dst`) or `red` (without).
    Atom {
        space: Space,
        op: AtomOp,
        ty: Ty,
        dst: Option<Reg>,
        addr: Addr,
        b: Src,
        c: Option<Src>,
        release: bool,
        /// `add.f32` without `.noftz`: subnormal inputs and results flush to signed zero in
        /// global memory.
        ftz: bool,
    },
    /// `membar.gl`, `membar.sys`, `fence.sc/acq_rel.gpu|sys`: publishes the thread's (and, by
    /// cumulativity, its block's) global stores.
    Fence,
    /// `membar.cta`, `fence.*.cta`: orders within the block, where the model is already ordered.
    FenceCta,
    Bar {
        id: Src,
        count: Option<Src>,
    },
    Shfl {
        mode: ShflMode,
        dst: Reg,
        dst_pred: Option<Reg>,
        a: Src,
        b: Src,
        c: Src,
        mask: Src,
    },
    Vote {
        mode: VoteMode,
        dst: Reg,
        pred: PredSrc,
        mask: Src,
    },
    Activemask {
        dst: Reg,
    },
    Bra {
        target: u32,
    },
    Exit,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Instr {
    /// `@%p` / `@!%p`.
    pub guard: Option<(Reg, bool)>,
    pub op: Op,
    /// Line in the PTX text.
    pub line: u32,
}

#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

#[derive(Clone, Debug)]
pub struct Kernel {
    pub name: String,
    pub params: Vec<Param>,
    pub param_bytes: u32,
    /// Static shared memory of the kernel (module-level variables included).
    pub shared_bytes: u32,
    pub instrs: Vec<Instr>,
    /// Register slots after packing (`regalloc`): a warp's file holds `n_regs * 32` values.
    pub n_regs: usize,
    /// Virtual registers as declared in the PTX.
    pub declared_regs: usize,
    /// The source text of each instruction, for error messages.
    pub text: Vec<String>,
    pub max_ntid: Option<[u32; 3]>,
}

#[derive(Clone, Debug, Default)]
pub struct Module {
    pub kernels: Vec<Kernel>,
    /// What [`parse_lenient`](super::parse_lenient) skipped: kernels the interpreter cannot run
    /// (an instruction it lacks, a call to a `.func`) and `.func`s, each with why. The driver
    /// loads such a module and fails only when asked for one of those kernels; the strict
    /// [`parse`](super::parse) (gradmask's own kernels, `tests/vgpu_coverage.rs`) refuses it.
    pub unloadable: Vec<(String, super::ParseError)>,
    /// Every opcode the module uses, as written (`ld.global.nc.v4.u32`).
    pub opcodes: std::collections::BTreeSet<String>,
}

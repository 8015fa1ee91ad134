//! A restricted unpickler for PyTorch checkpoints.
//!
//! It reads the pickle opcodes (protocols 0 to 5) that `torch.save` and
//! `torch.jit.save` emit into an arena of [`Value`]s and never executes
//! anything: `GLOBAL`/`STACK_GLOBAL` only resolve names on an allow-list
//! (PyTorch's tensor-rebuilding functions, storage types, `OrderedDict`, ...)
//! and fail with the global's name otherwise; `REDUCE` and `NEWOBJ` record
//! the call (a [`Value::Call`]) instead of making it, except for a handful of
//! pure constructors (`OrderedDict()`, `set(...)`, `torch.Size(...)`,
//! `_codecs.encode(...)`, TorchScript's `build_intlist(...)`) whose result is
//! built directly. In TorchScript archives, `__torch__.*` classes are
//! allowed as inert records: their `BUILD` state (the module's attributes)
//! is kept so parameters can be found by attribute path.
//!
//! Containers live in an arena and are referred to by [`Id`], so memoized
//! objects are shared, as in Python: a dict memoized before its items are
//! set sees them. Malformed input is an error, never a panic; the stack and
//! memo are bounded, and the unpickler does not recurse.
//!
//! Work is bounded by the input's size: every opcode costs one unit, and
//! every element or byte an opcode copies or visits beyond what it read
//! from the input (a memoized tuple handed to `REDUCE` again and again, a
//! shared list copied by `set(...)`, a long memoized name cloned by
//! `STACK_GLOBAL`) costs one unit each. A pickle of `n` bytes may spend
//! [`WORK_PER_BYTE`]` * n + `[`WORK_SLACK`] units; beyond that it is
//! refused with an error naming the opcode and its byte offset. What is
//! left of the budget is handed to the code that walks the result
//! ([`Pickle::work_left`]), so the whole import stays linear.

use std::collections::HashMap;
use std::fmt;

/// Index of a value in a [`Pickle`]'s arena.
pub type Id = usize;

/// A global (module and qualified name) that passed the allow-list. It is a
/// name only; nothing is imported or called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global {
    /// E.g. `torch._utils`.
    pub module: String,
    /// E.g. `_rebuild_tensor_v2`.
    pub name: String,
}

impl Global {
    /// Whether this is a TorchScript class (`__torch__.*`).
    pub fn is_torchscript_class(&self) -> bool {
        self.module == "__torch__" || self.module.starts_with("__torch__.")
    }
}

impl fmt::Display for Global {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.module, self.name)
    }
}

/// An unpickled value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True`/`False`.
    Bool(bool),
    /// An integer that fits an `i64`.
    Int(i64),
    /// A larger integer: little-endian two's complement bytes.
    BigInt(Vec<u8>),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A list (also sets and frozensets).
    List(Vec<Id>),
    /// A tuple.
    Tuple(Vec<Id>),
    /// A dict (also `OrderedDict`), in insertion order.
    Dict(Vec<(Id, Id)>),
    /// An allowed global, as a name (boxed, so every value stays small: a
    /// pickle may make one value per input byte).
    Global(Box<Global>),
    /// A persistent id: what the pickler put in place of an object it
    /// stores elsewhere (PyTorch: a storage).
    PersId(Id),
    /// `func(*args)` (`REDUCE`) or `func.__new__(func, *args)` (`NEWOBJ`),
    /// recorded, never made; `state` is what `BUILD` would have applied.
    Call {
        /// The function or class.
        func: Box<Global>,
        /// The argument tuple.
        args: Id,
        /// The `BUILD` state, if any.
        state: Option<Id>,
    },
}

/// Which globals beyond the common allow-list are accepted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Accept `__torch__.*` classes (TorchScript archives) as inert records.
    pub torchscript: bool,
}

/// One unpickled object graph.
#[derive(Debug)]
pub struct Pickle {
    values: Vec<Value>,
    root: Id,
    work_left: u64,
}

impl Pickle {
    /// The value `STOP` returned.
    pub fn root(&self) -> Id {
        self.root
    }

    /// The value with id `id` (ids come from this pickle's values).
    pub fn get(&self, id: Id) -> &Value {
        self.values.get(id).unwrap_or(&Value::None)
    }

    /// Work units left of the budget (see [`WORK_PER_BYTE`]) for walking
    /// the result.
    pub fn work_left(&self) -> u64 {
        self.work_left
    }

    /// Every value, in creation order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// The string, if `id` is one.
    pub fn str(&self, id: Id) -> Option<&str> {
        match self.get(id) {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if `id` is one.
    pub fn int(&self, id: Id) -> Option<i64> {
        match self.get(id) {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The items, if `id` is a tuple or a list.
    pub fn items(&self, id: Id) -> Option<&[Id]> {
        match self.get(id) {
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }
}

/// Why a pickle could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct PickleError {
    /// Byte offset (in the whole input) of the opcode at fault.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PickleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (pickle byte {})", self.message, self.offset)
    }
}

impl std::error::Error for PickleError {}

/// Most values on the stack at once.
const MAX_STACK: usize = 1 << 20;
/// Most open marks at once.
const MAX_MARKS: usize = 1 << 16;
/// Most memo entries.
const MAX_MEMO: usize = 1 << 22;

/// Work units a pickle may spend per byte of input. Real checkpoints spend
/// well under 1 (one unit per opcode, a few bytes each, plus the walk over
/// the result); 16 leaves room for any honest pickle and keeps a crafted
/// one linear in time, and, since a copied item costs [`COPY_COST`], its
/// copies within 16 bytes of memory per input byte.
pub const WORK_PER_BYTE: u64 = 16;
/// Work units per item a constructor (`set(...)`, `OrderedDict(...)`)
/// copies: the 8 bytes of memory the copy keeps.
const COPY_COST: usize = 8;
/// Work units every pickle may spend regardless of its size.
pub const WORK_SLACK: u64 = 1 << 20;

/// Storage types PyTorch pickles by name (`torch.FloatStorage`, ...).
pub const STORAGE_TYPES: [&str; 10] = [
    "FloatStorage",
    "HalfStorage",
    "BFloat16Storage",
    "DoubleStorage",
    "LongStorage",
    "IntStorage",
    "ShortStorage",
    "CharStorage",
    "ByteStorage",
    "BoolStorage",
];

/// `torch.<dtype>` objects.
const DTYPES: [&str; 16] = [
    "float32", "float", "float16", "half", "bfloat16", "float64", "double", "int64", "long",
    "int32", "int", "int16", "short", "int8", "uint8", "bool",
];

/// The allow-list: the only globals a pickle may name.
fn allowed(module: &str, name: &str, options: Options) -> bool {
    match module {
        "collections" => name == "OrderedDict",
        "builtins" | "__builtin__" => matches!(name, "set" | "frozenset" | "slice"),
        "_codecs" => name == "encode",
        "torch._utils" => {
            matches!(
                name,
                "_rebuild_tensor"
                    | "_rebuild_tensor_v2"
                    | "_rebuild_parameter"
                    | "_rebuild_parameter_with_state"
            )
        }
        "torch._tensor" => name == "_rebuild_from_type_v2",
        "torch.nn.parameter" => name == "Parameter",
        "torch.storage" => matches!(name, "UntypedStorage" | "TypedStorage"),
        "torch" => {
            STORAGE_TYPES.contains(&name)
                || DTYPES.contains(&name)
                || matches!(name, "Size" | "Tensor" | "UntypedStorage" | "TypedStorage")
        }
        "torch.jit._pickle" => {
            matches!(
                name,
                "build_intlist"
                    | "build_doublelist"
                    | "build_boollist"
                    | "build_tensorlist"
                    | "restore_type_tag"
            )
        }
        m => options.torchscript && (m == "__torch__" || m.starts_with("__torch__.")),
    }
}

/// Reads one pickle starting at `data[start]`; returns it and the offset
/// just past its `STOP`.
pub fn load(data: &[u8], start: usize, options: Options) -> Result<(Pickle, usize), PickleError> {
    let mut u = Unpickler {
        data,
        pos: start,
        op_at: start,
        options,
        values: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        op: 0,
        work: 0,
        budget: (data.len().saturating_sub(start) as u64)
            .saturating_mul(WORK_PER_BYTE)
            .saturating_add(WORK_SLACK),
    };
    let root = u.run()?;
    let work_left = u.budget.saturating_sub(u.work);
    Ok((Pickle { values: u.values, root, work_left }, u.pos))
}

struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    /// Where the current opcode started, for errors.
    op_at: usize,
    options: Options,
    values: Vec<Value>,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: HashMap<u64, Id>,
    /// The opcode being run, for errors.
    op: u8,
    /// Work units spent so far (see [`WORK_PER_BYTE`]).
    work: u64,
    /// Work units this pickle may spend.
    budget: u64,
}

impl Unpickler<'_> {
    fn err<T>(&self, message: impl Into<String>) -> Result<T, PickleError> {
        Err(PickleError { offset: self.op_at, message: message.into() })
    }

    /// Spends `n` work units; an error once the budget is exhausted.
    fn charge(&mut self, n: usize) -> Result<(), PickleError> {
        self.work = self.work.saturating_add(n as u64);
        if self.work > self.budget {
            return self.err(format!(
                "opcode {} exceeds the pickle's work budget ({} units: {WORK_PER_BYTE} per \
                 input byte + {WORK_SLACK}); a pickle this small cannot need that much work",
                op_name(self.op),
                self.budget
            ));
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&[u8], PickleError> {
        let end = match self.pos.checked_add(n) {
            Some(end) if end <= self.data.len() => end,
            _ => return self.err("truncated pickle"),
        };
        let at = self.pos;
        self.pos = end;
        Ok(&self.data[at..end])
    }

    fn byte(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PickleError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, PickleError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A length as usize (it is then bounds-checked by `take`).
    fn len(&mut self, n: u64) -> Result<usize, PickleError> {
        match usize::try_from(n) {
            Ok(n) => Ok(n),
            Err(_) => self.err("length too large"),
        }
    }

    /// A protocol-0 line, without its `\n`.
    fn line(&mut self) -> Result<&[u8], PickleError> {
        let rest = self.data.get(self.pos..).unwrap_or(&[]);
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return self.err("truncated pickle (no end of line)");
        };
        let at = self.pos;
        self.pos = at + n + 1;
        Ok(&self.data[at..at + n])
    }

    fn line_str(&mut self) -> Result<String, PickleError> {
        let line = self.line()?;
        match std::str::from_utf8(line) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => self.err("a text opcode's argument is not UTF-8"),
        }
    }

    fn utf8(&self, bytes: &[u8]) -> Result<String, PickleError> {
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => self.err("a unicode string is not valid UTF-8"),
        }
    }

    fn alloc(&mut self, v: Value) -> Id {
        self.values.push(v);
        self.values.len() - 1
    }

    fn push(&mut self, id: Id) -> Result<(), PickleError> {
        if self.stack.len() >= MAX_STACK {
            return self.err("pickle stack too deep");
        }
        self.stack.push(id);
        Ok(())
    }

    fn push_new(&mut self, v: Value) -> Result<(), PickleError> {
        let id = self.alloc(v);
        self.push(id)
    }

    fn pop(&mut self) -> Result<Id, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return self.err("pickle stack underflow");
        }
        match self.stack.pop() {
            Some(id) => Ok(id),
            None => self.err("pickle stack underflow"),
        }
    }

    fn top(&self) -> Result<Id, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        match self.stack.last() {
            Some(&id) if self.stack.len() > floor => Ok(id),
            _ => self.err("pickle stack underflow"),
        }
    }

    /// Pops everything down to the last mark, and the mark.
    fn pop_mark(&mut self) -> Result<Vec<Id>, PickleError> {
        let Some(mark) = self.marks.pop() else { return self.err("no mark on the pickle stack") };
        if mark > self.stack.len() {
            return self.err("corrupt pickle mark");
        }
        Ok(self.stack.split_off(mark))
    }

    fn memo_put(&mut self, key: u64) -> Result<(), PickleError> {
        let id = self.top()?;
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&key) {
            return self.err("pickle memo too large");
        }
        self.memo.insert(key, id);
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> Result<(), PickleError> {
        match self.memo.get(&key) {
            Some(&id) => self.push(id),
            None => self.err(format!("memo key {key} is not set")),
        }
    }

    fn global(&mut self, module: String, name: String) -> Result<(), PickleError> {
        if !allowed(&module, &name, self.options) {
            return self.err(format!("global '{module}.{name}' is not allowed"));
        }
        self.push_new(Value::Global(Box::new(Global { module, name })))
    }

    fn global_of(&mut self, id: Id, op: &str) -> Result<Global, PickleError> {
        match self.values.get(id) {
            Some(Value::Global(g)) => {
                let g = Global::clone(g);
                self.charge(g.module.len() + g.name.len())?;
                Ok(g)
            }
            _ => self.err(format!("{op} on something that is not an allowed global")),
        }
    }

    /// The items of a tuple or list, copied (and charged for).
    fn copy_items(&mut self, id: Id) -> Result<Vec<Id>, PickleError> {
        let n = self.items_len(id);
        self.charge(n.saturating_mul(COPY_COST))?;
        Ok(match self.values.get(id) {
            Some(Value::Tuple(v)) | Some(Value::List(v)) => v.clone(),
            _ => Vec::new(),
        })
    }

    /// How many items a tuple or list has (0 for anything else).
    fn items_len(&self, id: Id) -> usize {
        match self.values.get(id) {
            Some(Value::Tuple(v)) | Some(Value::List(v)) => v.len(),
            _ => 0,
        }
    }

    /// `func(*args)`: built directly for a few pure constructors, recorded
    /// otherwise. The argument tuple is only copied when it is short enough
    /// to be a constructor's, so applying many calls to one shared big tuple
    /// costs nothing per call.
    fn reduce(&mut self, func: Global, args: Id) -> Result<(), PickleError> {
        let is_tuple = matches!(self.values.get(args), Some(Value::Tuple(_)));
        if !is_tuple {
            return self.err(format!("arguments of '{func}' are not a tuple"));
        }
        if self.items_len(args) > 2 {
            // Longer than any constructor's arguments: recorded.
            return self.push_new(Value::Call { func: Box::new(func), args, state: None });
        }
        let items = self.copy_items(args)?;
        let m = func.module.as_str();
        let n = func.name.as_str();
        match (m, n, items.as_slice()) {
            ("collections", "OrderedDict", []) => self.push_new(Value::Dict(Vec::new())),
            ("collections", "OrderedDict", [pairs]) => {
                let mut dict = Vec::new();
                for pair in self.copy_items(*pairs)? {
                    if self.items_len(pair) != 2 {
                        return self.err("OrderedDict items are not pairs");
                    }
                    match self.copy_items(pair)?.as_slice() {
                        [k, v] => dict.push((*k, *v)),
                        _ => return self.err("OrderedDict items are not pairs"),
                    }
                }
                self.push_new(Value::Dict(dict))
            }
            ("builtins" | "__builtin__", "set" | "frozenset", []) => {
                self.push_new(Value::List(Vec::new()))
            }
            ("builtins" | "__builtin__", "set" | "frozenset", [items]) => {
                let items = self.copy_items(*items)?;
                self.push_new(Value::List(items))
            }
            ("torch", "Size", [dims]) => self.push(*dims),
            ("torch.jit._pickle", "restore_type_tag", [value, _]) => self.push(*value),
            ("torch.jit._pickle", _, [list])
                if n.starts_with("build_") && n != "build_tensor_from_id" =>
            {
                self.push(*list)
            }
            ("_codecs", "encode", [s, enc]) => {
                let (Some(Value::Str(s)), Some(Value::Str(enc))) =
                    (self.values.get(*s), self.values.get(*enc))
                else {
                    return self.err("_codecs.encode arguments are not strings");
                };
                let (s, enc) = (s.clone(), enc.clone());
                self.charge(s.len() + enc.len())?;
                let bytes = match enc.to_ascii_lowercase().replace('-', "_").as_str() {
                    "latin1" | "latin_1" | "iso_8859_1" => {
                        let mut out = Vec::with_capacity(s.len());
                        for c in s.chars() {
                            match u8::try_from(u32::from(c)) {
                                Ok(b) => out.push(b),
                                Err(_) => {
                                    return self.err("_codecs.encode: character outside latin-1")
                                }
                            }
                        }
                        out
                    }
                    "utf8" | "utf_8" => s.as_bytes().to_vec(),
                    other => {
                        return self.err(format!("_codecs.encode: unsupported encoding '{other}'"))
                    }
                };
                self.push_new(Value::Bytes(bytes))
            }
            _ => self.push_new(Value::Call { func: Box::new(func), args, state: None }),
        }
    }

    /// A protocol-0 `I`/`L` integer.
    fn text_int(&mut self, long: bool) -> Result<(), PickleError> {
        let line = self.line_str()?;
        let text = if long { line.trim_end_matches('L') } else { line.as_str() };
        if !long && text == "00" {
            return self.push_new(Value::Bool(false));
        }
        if !long && text == "01" {
            return self.push_new(Value::Bool(true));
        }
        match text.parse::<i64>() {
            Ok(i) => self.push_new(Value::Int(i)),
            Err(_) => self.err(format!("bad integer '{text}'")),
        }
    }

    /// `LONG1`/`LONG4`: little-endian two's complement.
    fn long(&mut self, n: usize) -> Result<(), PickleError> {
        let bytes = self.take(n)?.to_vec();
        let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
        let fill = if negative { 0xff } else { 0 };
        if bytes.len() > 8 && bytes[8..].iter().any(|&b| b != fill) {
            return self.push_new(Value::BigInt(bytes));
        }
        let mut a = [fill; 8];
        for (d, s) in a.iter_mut().zip(&bytes) {
            *d = *s;
        }
        let v = i64::from_le_bytes(a);
        // More than 8 bytes of sign extension: the sign must agree.
        if bytes.len() > 8 && (v < 0) != negative {
            return self.push_new(Value::BigInt(bytes));
        }
        self.push_new(Value::Int(v))
    }

    /// A protocol-0 `S` string: a quoted Python 2 `repr`.
    fn text_string(&mut self) -> Result<(), PickleError> {
        let line = self.line()?.to_vec();
        let inner = match line.as_slice() {
            [q, inner @ .., q2] if q == q2 && (*q == b'\'' || *q == b'"') => inner,
            _ => return self.err("protocol-0 string is not quoted"),
        };
        let mut out = Vec::with_capacity(inner.len());
        let mut i = 0;
        while i < inner.len() {
            let c = inner[i];
            i += 1;
            if c != b'\\' {
                out.push(c);
                continue;
            }
            let Some(&e) = inner.get(i) else {
                return self.err("bad escape in a protocol-0 string");
            };
            i += 1;
            match e {
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'0' => out.push(0),
                b'\\' | b'\'' | b'"' => out.push(e),
                b'x' => {
                    let hex = inner.get(i..i + 2).and_then(|h| std::str::from_utf8(h).ok());
                    match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(b) => out.push(b),
                        None => return self.err("bad \\x escape in a protocol-0 string"),
                    }
                    i += 2;
                }
                _ => return self.err("unsupported escape in a protocol-0 string"),
            }
        }
        let s = latin1_or_utf8(&out);
        self.push_new(Value::Str(s))
    }

    /// A protocol-0 `V` string: raw-unicode-escape.
    fn text_unicode(&mut self) -> Result<(), PickleError> {
        let line = self.line()?.to_vec();
        let mut out = String::with_capacity(line.len());
        let mut i = 0;
        while i < line.len() {
            let c = line[i];
            if c == b'\\' && matches!(line.get(i + 1), Some(b'u') | Some(b'U')) {
                let n = if line[i + 1] == b'u' { 4 } else { 8 };
                let hex = line.get(i + 2..i + 2 + n).and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u32::from_str_radix(h, 16).ok()).and_then(char::from_u32) {
                    Some(ch) => out.push(ch),
                    None => return self.err("bad \\u escape in a protocol-0 unicode string"),
                }
                i += 2 + n;
            } else {
                out.push(char::from(c));
                i += 1;
            }
        }
        self.push_new(Value::Str(out))
    }

    fn run(&mut self) -> Result<Id, PickleError> {
        loop {
            self.op_at = self.pos;
            let op = self.byte()?;
            self.op = op;
            self.charge(1)?;
            match op {
                // PROTO
                0x80 => {
                    let v = self.byte()?;
                    if v > 5 {
                        return self.err(format!("unsupported pickle protocol {v}"));
                    }
                }
                // FRAME: the frame's bytes follow inline.
                0x95 => {
                    self.u64()?;
                }
                // STOP
                b'.' => return self.pop(),
                b'(' => {
                    if self.marks.len() >= MAX_MARKS {
                        return self.err("too many pickle marks");
                    }
                    self.marks.push(self.stack.len());
                }
                // POP
                b'0' => {
                    if self.marks.last() == Some(&self.stack.len()) {
                        self.marks.pop();
                    } else {
                        self.pop()?;
                    }
                }
                // POP_MARK
                b'1' => {
                    self.pop_mark()?;
                }
                // DUP
                b'2' => {
                    let id = self.top()?;
                    self.push(id)?;
                }
                b'N' => self.push_new(Value::None)?,
                0x88 => self.push_new(Value::Bool(true))?,
                0x89 => self.push_new(Value::Bool(false))?,
                // BININT
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push_new(Value::Int(i64::from(v)))?
                }
                // BININT1
                b'K' => {
                    let v = self.byte()?;
                    self.push_new(Value::Int(i64::from(v)))?
                }
                // BININT2
                b'M' => {
                    let v = self.u16()?;
                    self.push_new(Value::Int(i64::from(v)))?
                }
                b'I' => self.text_int(false)?,
                b'L' => self.text_int(true)?,
                // LONG1
                0x8a => {
                    let n = usize::from(self.byte()?);
                    self.long(n)?
                }
                // LONG4
                0x8b => {
                    let n = self.u32()? as i32;
                    let Ok(n) = usize::try_from(n) else {
                        return self.err("negative LONG4 length");
                    };
                    self.long(n)?
                }
                // BINFLOAT (big-endian)
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.push_new(Value::Float(f64::from_be_bytes(a)))?
                }
                // FLOAT
                b'F' => {
                    let line = self.line_str()?;
                    match line.trim().parse::<f64>() {
                        Ok(f) => self.push_new(Value::Float(f))?,
                        Err(_) => return self.err(format!("bad float '{line}'")),
                    }
                }
                // SHORT_BINUNICODE, BINUNICODE, BINUNICODE8
                0x8c | b'X' | 0x8d => {
                    let n = match op {
                        0x8c => u64::from(self.byte()?),
                        b'X' => u64::from(self.u32()?),
                        _ => self.u64()?,
                    };
                    let n = self.len(n)?;
                    let bytes = self.take(n)?.to_vec();
                    let s = self.utf8(&bytes)?;
                    self.push_new(Value::Str(s))?
                }
                // SHORT_BINSTRING, BINSTRING (Python 2 str)
                b'U' | b'T' => {
                    let n = if op == b'U' {
                        usize::from(self.byte()?)
                    } else {
                        let n = self.u32()? as i32;
                        let Ok(n) = usize::try_from(n) else {
                            return self.err("negative BINSTRING length");
                        };
                        n
                    };
                    let s = latin1_or_utf8(self.take(n)?);
                    self.push_new(Value::Str(s))?
                }
                b'S' => self.text_string()?,
                b'V' => self.text_unicode()?,
                // SHORT_BINBYTES, BINBYTES, BINBYTES8, BYTEARRAY8
                b'C' | b'B' | 0x8e | 0x96 => {
                    let n = match op {
                        b'C' => u64::from(self.byte()?),
                        b'B' => u64::from(self.u32()?),
                        _ => self.u64()?,
                    };
                    let n = self.len(n)?;
                    let bytes = self.take(n)?.to_vec();
                    self.push_new(Value::Bytes(bytes))?
                }
                // READONLY_BUFFER: a no-op on the value.
                0x98 => {
                    self.top()?;
                }
                b'}' => self.push_new(Value::Dict(Vec::new()))?,
                b']' => self.push_new(Value::List(Vec::new()))?,
                b')' => self.push_new(Value::Tuple(Vec::new()))?,
                // EMPTY_SET
                0x8f => self.push_new(Value::List(Vec::new()))?,
                // TUPLE, LIST, FROZENSET
                b't' | b'l' | 0x91 => {
                    let items = self.pop_mark()?;
                    let v = if op == b't' { Value::Tuple(items) } else { Value::List(items) };
                    self.push_new(v)?
                }
                // TUPLE1..3
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push_new(Value::Tuple(items))?
                }
                // DICT
                b'd' => {
                    let items = self.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return self.err("DICT with an odd number of items");
                    }
                    let pairs = items.chunks_exact(2).map(|p| (p[0], p[1])).collect();
                    self.push_new(Value::Dict(pairs))?
                }
                // APPEND, APPENDS, ADDITEMS
                b'a' | b'e' | 0x90 => {
                    let items = if op == b'a' { vec![self.pop()?] } else { self.pop_mark()? };
                    let target = self.top()?;
                    match self.values.get_mut(target) {
                        Some(Value::List(list)) => list.extend(items),
                        _ => return self.err("APPEND to something that is not a list"),
                    }
                }
                // SETITEM, SETITEMS
                b's' | b'u' => {
                    let items = if op == b's' {
                        let v = self.pop()?;
                        let k = self.pop()?;
                        vec![k, v]
                    } else {
                        self.pop_mark()?
                    };
                    if items.len() % 2 != 0 {
                        return self.err("SETITEMS with an odd number of items");
                    }
                    let target = self.top()?;
                    match self.values.get_mut(target) {
                        Some(Value::Dict(dict)) => {
                            dict.extend(items.chunks_exact(2).map(|p| (p[0], p[1])))
                        }
                        _ => return self.err("SETITEM on something that is not a dict"),
                    }
                }
                // BINPUT, LONG_BINPUT, PUT, MEMOIZE
                b'q' => {
                    let k = self.byte()?;
                    self.memo_put(u64::from(k))?
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(u64::from(k))?
                }
                b'p' => {
                    let line = self.line_str()?;
                    let Ok(k) = line.parse::<u64>() else {
                        return self.err(format!("bad memo key '{line}'"));
                    };
                    self.memo_put(k)?
                }
                0x94 => {
                    let k = self.memo.len() as u64;
                    self.memo_put(k)?
                }
                // BINGET, LONG_BINGET, GET
                b'h' => {
                    let k = self.byte()?;
                    self.memo_get(u64::from(k))?
                }
                b'j' => {
                    let k = self.u32()?;
                    self.memo_get(u64::from(k))?
                }
                b'g' => {
                    let line = self.line_str()?;
                    let Ok(k) = line.parse::<u64>() else {
                        return self.err(format!("bad memo key '{line}'"));
                    };
                    self.memo_get(k)?
                }
                // GLOBAL
                b'c' => {
                    let module = self.line_str()?;
                    let name = self.line_str()?;
                    self.global(module, name)?
                }
                // STACK_GLOBAL
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (self.values.get(module), self.values.get(name)) {
                        (Some(Value::Str(m)), Some(Value::Str(n))) => {
                            let (m, n) = (m.clone(), n.clone());
                            self.charge(m.len() + n.len())?;
                            self.global(m, n)?
                        }
                        _ => return self.err("STACK_GLOBAL arguments are not strings"),
                    }
                }
                // REDUCE
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let func = self.global_of(func, "REDUCE")?;
                    self.reduce(func, args)?
                }
                // NEWOBJ
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let func = self.global_of(cls, "NEWOBJ")?;
                    if !matches!(self.values.get(args), Some(Value::Tuple(_))) {
                        return self.err(format!("arguments of '{func}' are not a tuple"));
                    }
                    self.push_new(Value::Call { func: Box::new(func), args, state: None })?
                }
                // NEWOBJ_EX: keyword arguments are dropped.
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let func = self.global_of(cls, "NEWOBJ_EX")?;
                    self.push_new(Value::Call { func: Box::new(func), args, state: None })?
                }
                // BUILD: kept on records; dicts (OrderedDict's `_metadata`)
                // and other values ignore it.
                b'b' => {
                    let state = self.pop()?;
                    let target = self.top()?;
                    if let Some(Value::Call { state: s, .. }) = self.values.get_mut(target) {
                        *s = Some(state);
                    }
                }
                // BINPERSID
                b'Q' => {
                    let pid = self.pop()?;
                    self.push_new(Value::PersId(pid))?
                }
                // PERSID
                b'P' => {
                    let line = self.line()?;
                    let s = latin1_or_utf8(line);
                    let pid = self.alloc(Value::Str(s));
                    self.push_new(Value::PersId(pid))?
                }
                b'i' | b'o' => {
                    return self
                        .err("opcodes INST/OBJ (arbitrary object construction) are not allowed")
                }
                0x82..=0x84 => {
                    return self.err("extension-registry opcodes (EXT1/2/4) are not allowed")
                }
                0x97 => return self.err("out-of-band buffers (NEXT_BUFFER) are not supported"),
                other => return self.err(format!("unknown pickle opcode 0x{other:02x}")),
            }
        }
    }
}

/// A pickle opcode's name, for messages.
fn op_name(op: u8) -> String {
    let name = match op {
        b'R' => "REDUCE",
        0x81 => "NEWOBJ",
        0x92 => "NEWOBJ_EX",
        b'b' => "BUILD",
        b'h' => "BINGET",
        b'j' => "LONG_BINGET",
        b'g' => "GET",
        0x93 => "STACK_GLOBAL",
        b'c' => "GLOBAL",
        b'a' => "APPEND",
        b'e' => "APPENDS",
        b's' => "SETITEM",
        b'u' => "SETITEMS",
        b't' => "TUPLE",
        b'l' => "LIST",
        b'd' => "DICT",
        b'2' => "DUP",
        _ => return format!("0x{op:02x}"),
    };
    format!("{name} (0x{op:02x})")
}

/// Python 2 `str` bytes as text: UTF-8 when valid, latin-1 otherwise.
fn latin1_or_utf8(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_small() {
        // A pickle may make about one value per input byte.
        assert!(std::mem::size_of::<Value>() <= 40, "{}", std::mem::size_of::<Value>());
    }

    fn load_all(data: &[u8]) -> Result<Pickle, PickleError> {
        load(data, 0, Options::default()).map(|(p, _)| p)
    }

    #[test]
    fn reads_scalars_and_containers() {
        // {'a': [1, -2, 70000, 2**70], 'b': (None, True, 1.5, b'xy', 'é')}, protocol 2.
        let mut data =
            b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffJp\x11\x01\x00"
                .to_vec();
        data.extend_from_slice(b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x40e");
        data.extend_from_slice(b"X\x01\x00\x00\x00b(NG\x3f\xf8\x00\x00\x00\x00\x00\x00\x88C\x02xyX\x02\x00\x00\x00\xc3\xa9tu.");
        let p = load_all(&data).unwrap_or_else(|e| panic!("{e}"));
        let Value::Dict(d) = p.get(p.root()) else { panic!("not a dict") };
        assert_eq!(p.str(d[0].0), Some("a"));
        let list = p.items(d[0].1).unwrap();
        assert_eq!(p.int(list[0]), Some(1));
        assert_eq!(p.int(list[1]), Some(-2));
        assert_eq!(p.int(list[2]), Some(70000));
        assert_eq!(p.get(list[3]), &Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 0x40]));
        assert_eq!(p.str(d[1].0), Some("b"));
    }

    #[test]
    fn long1_sign_extension() {
        for (bytes, want) in [
            (&b"\x80\x02\x8a\x00."[..], 0i64),
            (b"\x80\x02\x8a\x01\xff.", -1),
            (b"\x80\x02\x8a\x02\x00\x80.", -32768),
            (b"\x80\x02\x8a\x03\x00\x80\x00.", 32768),
            (b"\x80\x02\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\xff.", -1),
            (b"\x80\x02\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f.", i64::MAX),
        ] {
            let p = load_all(bytes).unwrap();
            assert_eq!(p.int(p.root()), Some(want), "{bytes:?}");
        }
        // 2**63 does not fit.
        let p = load_all(b"\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\x00.").unwrap();
        assert!(matches!(p.get(p.root()), Value::BigInt(_)));
    }

    #[test]
    fn memoized_dict_is_shared() {
        // d = {}; [d, d] with d filled after memoization: ]( }q\x00 h\x00 e ... then SETITEM on memo.
        // [ {}, <memo 0> ] then BINGET 0, 'k': 1, SETITEM, POP.
        let data = b"\x80\x02](}q\x00h\x00e h\x00X\x01\x00\x00\x00kK\x01s0.";
        let data: Vec<u8> = data.iter().copied().filter(|&b| b != b' ').collect();
        let p = load_all(&data).unwrap();
        let items = p.items(p.root()).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0], items[1], "one shared dict");
        let Value::Dict(d) = p.get(items[0]) else { panic!() };
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn protocol4_stack_global_and_frames() {
        // OrderedDict() with STACK_GLOBAL and MEMOIZE in a FRAME.
        let mut data = b"\x80\x04\x95\x20\x00\x00\x00\x00\x00\x00\x00".to_vec();
        data.extend_from_slice(b"\x8c\x0bcollections\x94\x8c\x0bOrderedDict\x94\x93\x94)R\x94.");
        let p = load_all(&data).unwrap();
        assert_eq!(p.get(p.root()), &Value::Dict(vec![]));
    }

    #[test]
    fn rejects_globals_by_name() {
        let e = load_all(b"cos\nsystem\n(S'echo hi'\ntR.").unwrap_err();
        assert!(e.message.contains("global 'os.system' is not allowed"), "{e}");
        assert_eq!(e.offset, 0);
        let e = load_all(b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.").unwrap_err();
        assert!(e.message.contains("global 'builtins.eval' is not allowed"), "{e}");
        // TorchScript classes only with the option.
        let data = b"\x80\x02c__torch__.m\nNet\n)\x81}X\x01\x00\x00\x00aK\x01sb.";
        let e = load_all(data).unwrap_err();
        assert!(e.message.contains("global '__torch__.m.Net' is not allowed"), "{e}");
        let (p, end) = load(data, 0, Options { torchscript: true }).unwrap();
        assert_eq!(end, data.len());
        let Value::Call { func, state: Some(state), .. } = p.get(p.root()) else {
            panic!("{:?}", p.get(p.root()))
        };
        assert!(func.module == "__torch__.m" && func.name == "Net" && func.is_torchscript_class());
        assert!(matches!(p.get(*state), Value::Dict(d) if d.len() == 1));
    }

    #[test]
    fn pure_constructors_are_built() {
        // _codecs.encode('\xff\x00', 'latin1') -> bytes; torch.Size((2, 3)) -> tuple.
        let data = b"\x80\x02c_codecs\nencode\nX\x04\x00\x00\x00\xc3\xbf\x00aX\x06\x00\x00\x00latin1\x86R.";
        let p = load_all(data).unwrap();
        assert_eq!(p.get(p.root()), &Value::Bytes(vec![0xff, 0, b'a']));
        let p = load_all(b"\x80\x02ctorch\nSize\nK\x02K\x03\x86\x85R.").unwrap();
        let dims = p.items(p.root()).unwrap();
        assert_eq!(dims.iter().map(|&d| p.int(d)).collect::<Vec<_>>(), [Some(2), Some(3)]);
        // A rebuild function is recorded, not called.
        let p = load_all(b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n)R.").unwrap();
        assert!(
            matches!(p.get(p.root()), Value::Call { func, .. } if func.name == "_rebuild_tensor_v2")
        );
    }

    #[test]
    fn returns_end_for_consecutive_pickles() {
        let data = b"\x80\x02K\x01.\x80\x02K\x02.";
        let (p, end) = load(data, 0, Options::default()).unwrap();
        assert_eq!((p.int(p.root()), end), (Some(1), 5));
        let (p, end) = load(data, end, Options::default()).unwrap();
        assert_eq!((p.int(p.root()), end), (Some(2), 10));
    }

    #[test]
    fn malformed_input_is_an_error() {
        for bad in [
            &b""[..],
            b"\x80",
            b"\x80\x02",
            b"\x80\x02K",
            b"\x80\x02X\xff\xff\xff\xff",
            b"\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\xff",
            b"\x80\x02h\x05.",
            b"\x80\x02e.",
            b"\x80\x02.",
            b"\x80\x02K\x01K\x02s.",
            b"\x80\x02(K\x01d.",
            b"\x80\x02K\x01)R.",
            b"\x80\x02\xff",
            b"\x80\x07.",
            b"\x80\x02X\x02\x00\x00\x00\xff\xfe.",
            b"cnope",
        ] {
            assert!(load_all(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn corrupted_pickles_never_panic() {
        let good: &[u8] = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01ctorch._utils\n_rebuild_tensor_v2\nq\x02((X\x07\x00\x00\x00storageq\x03ctorch\nFloatStorage\nq\x04X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQK\x00K\x02K\x02\x86K\x02K\x01\x86\x89ccollections\nOrderedDict\n)RtRq\x05X\x01\x00\x00\x00bh\x05X\x01\x00\x00\x00c](\x8a\x01\x05\x85\x88\x94\x94\x95\x01\x00\x00\x00\x00\x00\x00\x00eu.";
        assert!(load_all(good).is_ok());
        // Every truncation, and deterministic pseudo-random byte flips.
        for n in 0..good.len() {
            let _ = load_all(&good[..n]);
        }
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut data = good.to_vec();
            for _ in 0..3 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = (state % data.len() as u64) as usize;
                data[at] = (state >> 32) as u8;
            }
            let _ = load(&data, 0, Options { torchscript: true });
        }
    }
}

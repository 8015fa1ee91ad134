//! PyTorch checkpoints: the zip format (torch >= 1.6), the legacy
//! `torch.save` stream, and TorchScript archives.
//!
//! All three hold a pickle (read by the restricted unpickler in
//! [`super::pickle`], which never runs code) whose tensors are
//! `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`
//! records, the storage being a persistent id
//! `('storage', torch.FloatStorage, key, location, numel[, view])`; the
//! storage bytes lie elsewhere in the file:
//!
//! - zip: entry `<prefix>/data/<key>`, usually stored, so referred to in
//!   place (a compressed entry is inflated into an owned buffer);
//! - legacy: after the pickles, each storage as an 8-byte little-endian
//!   element count and its bytes, in the order of the key-list pickle;
//! - TorchScript: like zip, with `data.pkl` a tree of `__torch__.*` module
//!   records whose attributes are parameters and submodules. Tensors in
//!   `constants.pkl` (constants baked into the code) are not imported.
//!
//! Tensors are named by their path in the object tree (`conv1.weight`,
//! `encoder.0.weight`, `layers.3`); when the top level is a checkpoint dict
//! with a `state_dict` (or else `model`) dict, only that dict is read and the
//! prefix is dropped, so optimizer state and other entries are ignored.
//! Values that are not tensors are ignored.

use std::collections::HashMap;
use std::path::Path;

use lsqr::format::RawDtype;

use super::pickle::{self, Global, Id, Options, Pickle, Value};
use super::{Buffer, Format, ImportError, SourceModel, SourceTensor, TensorBytes};

/// `0x1950a86a20f9469cfc6c`, little-endian, as `LONG1` writes it.
const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
/// The legacy format's protocol version.
const LEGACY_VERSION: i64 = 1001;
/// Deepest nesting of dicts, lists and modules searched for tensors.
const MAX_DEPTH: usize = 100;
/// Most objects visited while searching for tensors (shared objects are
/// visited once per path, so this bounds a crafted blow-up).
const MAX_VISITS: usize = 1 << 22;

/// Whether `bytes` start like a legacy `torch.save` stream: `PROTO`, then
/// the magic number as a `LONG1`, then `STOP`.
pub(super) fn looks_like_legacy(bytes: &[u8]) -> bool {
    matches!(bytes, [0x80, 2..=5, 0x8a, 10, rest @ ..] if rest.starts_with(&MAGIC) && rest.get(10) == Some(&b'.'))
}

/// Where a storage's bytes are.
#[derive(Debug, Clone, Copy)]
struct Storage {
    buffer: usize,
    start: usize,
    /// Bytes.
    len: usize,
}

/// A persistent id, parsed.
#[derive(Debug)]
struct StorageRef {
    dtype: RawDtype,
    key: String,
    /// Legacy storage views: (element offset, element count) in the root.
    view: Option<(usize, usize)>,
}

/// A tensor record, parsed.
#[derive(Debug)]
struct TensorSpec {
    storage: StorageRef,
    /// In elements.
    offset: usize,
    shape: Vec<usize>,
    strides: Vec<usize>,
}

fn storage_dtype(g: &Global) -> Option<RawDtype> {
    let dtype = match (g.module.as_str(), g.name.as_str()) {
        ("torch", "FloatStorage") => RawDtype::F32,
        ("torch", "HalfStorage") => RawDtype::F16,
        ("torch", "BFloat16Storage") => RawDtype::BF16,
        ("torch", "DoubleStorage") => RawDtype::F64,
        ("torch", "LongStorage") => RawDtype::I64,
        ("torch", "IntStorage") => RawDtype::I32,
        ("torch", "ShortStorage") => RawDtype::I16,
        ("torch", "CharStorage") => RawDtype::I8,
        ("torch", "ByteStorage") => RawDtype::U8,
        ("torch", "BoolStorage") => RawDtype::Bool,
        ("torch" | "torch.storage", "UntypedStorage") => RawDtype::U8,
        _ => return None,
    };
    Some(dtype)
}

fn usize_of(p: &Pickle, id: Id) -> Option<usize> {
    p.int(id).and_then(|i| usize::try_from(i).ok())
}

fn usizes(p: &Pickle, id: Id) -> Option<Vec<usize>> {
    p.items(id)?.iter().map(|&d| usize_of(p, d)).collect()
}

/// `('storage', type, key, location, numel[, view_metadata])`.
fn storage_ref(p: &Pickle, pid: Id) -> Result<StorageRef, String> {
    let bad = || "malformed storage reference (persistent id)".to_string();
    let items = p.items(pid).ok_or_else(bad)?;
    if items.len() < 5 || p.str(items[0]) != Some("storage") {
        return Err(bad());
    }
    let Value::Global(g) = p.get(items[1]) else { return Err(bad()) };
    let dtype = storage_dtype(g).ok_or_else(|| format!("unsupported storage type '{g}'"))?;
    let key = match p.get(items[2]) {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        _ => return Err(bad()),
    };
    let view = match items.get(5).map(|&v| p.get(v)) {
        None | Some(Value::None) => None,
        Some(Value::Tuple(v)) if v.len() == 3 => {
            Some((usize_of(p, v[1]).ok_or_else(bad)?, usize_of(p, v[2]).ok_or_else(bad)?))
        }
        Some(_) => return Err(bad()),
    };
    Ok(StorageRef { dtype, key, view })
}

/// Whether `func` rebuilds a tensor.
fn is_rebuild(func: &Global) -> bool {
    match func.module.as_str() {
        "torch._utils" => {
            matches!(
                func.name.as_str(),
                "_rebuild_tensor"
                    | "_rebuild_tensor_v2"
                    | "_rebuild_parameter"
                    | "_rebuild_parameter_with_state"
            )
        }
        "torch._tensor" => func.name == "_rebuild_from_type_v2",
        _ => false,
    }
}

/// The tensor that `func(*args)` rebuilds.
fn tensor_spec(p: &Pickle, func: &Global, args: Id, depth: usize) -> Result<TensorSpec, String> {
    if depth > 8 {
        return Err("tensor records nested too deeply".into());
    }
    let args = p.items(args).ok_or("tensor arguments are not a tuple")?;
    match func.name.as_str() {
        "_rebuild_tensor" | "_rebuild_tensor_v2" => {
            let [storage, offset, size, stride, ..] = args else {
                return Err(format!("too few arguments to {func}"));
            };
            let Value::PersId(pid) = p.get(*storage) else {
                return Err("tensor storage is not a storage reference".into());
            };
            let storage = storage_ref(p, *pid)?;
            let offset = usize_of(p, *offset).ok_or("bad storage offset")?;
            let shape = usizes(p, *size).ok_or("bad tensor size")?;
            let strides = usizes(p, *stride).ok_or("bad tensor strides")?;
            if strides.len() != shape.len() {
                return Err(format!("{} strides for {} dimensions", strides.len(), shape.len()));
            }
            Ok(TensorSpec { storage, offset, shape, strides })
        }
        "_rebuild_parameter" | "_rebuild_parameter_with_state" => {
            let Some(Value::Call { func, args, .. }) = args.first().map(|&a| p.get(a)) else {
                return Err("parameter data is not a tensor".into());
            };
            if !is_rebuild(func) {
                return Err("parameter data is not a tensor".into());
            }
            tensor_spec(p, func, *args, depth + 1)
        }
        "_rebuild_from_type_v2" => {
            let [inner, _new_type, inner_args, ..] = args else {
                return Err(format!("too few arguments to {func}"));
            };
            match p.get(*inner) {
                Value::Global(g) if is_rebuild(g) => tensor_spec(p, g, *inner_args, depth + 1),
                _ => Err("_rebuild_from_type_v2 does not rebuild a tensor".into()),
            }
        }
        _ => Err(format!("'{func}' does not rebuild a tensor")),
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// What is left of a pickle's work budget (see `pickle::WORK_PER_BYTE`),
/// spent walking its result: a shared object reached through many paths,
/// or a long name joined again at every level, costs in proportion.
struct Work(u64);

impl Work {
    fn charge(&mut self, n: usize, what: &str) -> Result<(), String> {
        match self.0.checked_sub(n as u64) {
            Some(left) => {
                self.0 = left;
                Ok(())
            }
            None => Err(format!(
                "{what} exceeds the pickle's work budget ({} units per pickle byte); \
                 a crafted pickle shares objects or names too often",
                pickle::WORK_PER_BYTE
            )),
        }
    }
}

/// Finds every tensor record under `id`, with its dotted path.
struct Finder<'a> {
    p: &'a Pickle,
    work: Work,
    visits: usize,
    found: Vec<(String, Id)>,
    /// Bytes of all names found so far (see [`MAX_NAME_BYTES`]).
    name_bytes: usize,
}

/// Cap on one tensor name: the `.lsq` format's own limit.
const MAX_NAME_LEN: usize = 4096;
/// Cap on all tensor names together: a shared object reached through many
/// paths would otherwise make the names, not the tensors, fill memory.
const MAX_NAME_BYTES: usize = 64 << 20;

impl Finder<'_> {
    fn walk(&mut self, id: Id, name: &str, depth: usize) -> Result<(), String> {
        self.visits += 1;
        self.work.charge(1 + name.len(), "searching for tensors")?;
        if depth > MAX_DEPTH {
            return Err(format!("objects nested more than {MAX_DEPTH} deep (at '{name}')"));
        }
        if self.visits > MAX_VISITS {
            return Err("too many objects to search for tensors".into());
        }
        let p = self.p;
        match p.get(id) {
            Value::Call { func, .. } if is_rebuild(func) => {
                self.name_bytes += name.len();
                if name.len() > MAX_NAME_LEN || self.name_bytes > MAX_NAME_BYTES {
                    return Err(format!(
                        "tensor names too long (a name of {} bytes, {} in all)",
                        name.len(),
                        self.name_bytes
                    ));
                }
                self.found.push((name.to_string(), id))
            }
            // A TorchScript module: its attributes are its BUILD state.
            Value::Call { func, state: Some(state), .. } if func.is_torchscript_class() => {
                self.walk(*state, name, depth + 1)?
            }
            Value::Dict(pairs) => {
                for &(k, v) in pairs {
                    let key = match p.get(k) {
                        Value::Str(s) => s.clone(),
                        Value::Int(i) => i.to_string(),
                        _ => continue,
                    };
                    self.walk(v, &join(name, &key), depth + 1)?;
                }
            }
            Value::List(items) | Value::Tuple(items) => {
                for (i, &v) in items.iter().enumerate() {
                    self.walk(v, &join(name, &i.to_string()), depth + 1)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The part of the object tree that holds the model: the `state_dict` (or
/// else `model`) dict of a checkpoint dict, or everything.
fn model_root(p: &Pickle) -> Id {
    let root = p.root();
    if let Value::Dict(pairs) = p.get(root) {
        for wanted in ["state_dict", "model"] {
            let hit = pairs
                .iter()
                .find(|&&(k, v)| p.str(k) == Some(wanted) && matches!(p.get(v), Value::Dict(_)));
            if let Some(&(_, v)) = hit {
                return v;
            }
        }
    }
    root
}

/// Where storages come from.
enum Storages {
    /// Zip entries by name, and those already resolved.
    Zip {
        entries: HashMap<String, Entry>,
        prefix: String,
        cache: HashMap<String, Storage>,
        /// Bytes compressed entries may still inflate to.
        inflate_left: u64,
    },
    /// Legacy: every storage, located up front.
    Legacy(HashMap<String, Storage>),
}

/// A zip entry.
#[derive(Debug, Clone, Copy)]
struct Entry {
    index: usize,
    data_start: usize,
    size: usize,
    stored: bool,
}

impl Storages {
    fn get(
        &mut self,
        model: &mut SourceModel,
        key: &str,
        tensor: &str,
    ) -> Result<Storage, ImportError> {
        match self {
            Storages::Legacy(map) => map.get(key).copied().ok_or_else(|| {
                ImportError::tensor(
                    &model.path,
                    tensor,
                    format!("storage '{key}' is not in the file"),
                )
            }),
            Storages::Zip { entries, prefix, cache, inflate_left } => {
                if let Some(s) = cache.get(key) {
                    return Ok(*s);
                }
                let name = format!("{prefix}data/{key}");
                let Some(entry) = entries.get(&name).copied() else {
                    return Err(ImportError::tensor(
                        &model.path,
                        tensor,
                        format!("storage entry '{name}' is missing"),
                    ));
                };
                let storage = if entry.stored {
                    let fits = entry
                        .data_start
                        .checked_add(entry.size)
                        .is_some_and(|e| e <= model.buffers[0].as_slice().len());
                    if !fits {
                        return Err(ImportError::tensor(
                            &model.path,
                            tensor,
                            format!("entry '{name}' is truncated"),
                        ));
                    }
                    Storage { buffer: 0, start: entry.data_start, len: entry.size }
                } else {
                    let bytes = read_entry(model, entry, &name, inflate_left)
                        .map_err(|e| ImportError::tensor(&model.path, tensor, e.message))?;
                    let len = bytes.len();
                    model.buffers.push(Buffer::Owned(bytes));
                    Storage { buffer: model.buffers.len() - 1, start: 0, len }
                };
                cache.insert(key.to_string(), storage);
                Ok(storage)
            }
        }
    }
}

fn zip_error(path: &Path, e: zip::result::ZipError) -> ImportError {
    ImportError::new(path, format!("bad zip archive: {e}"))
}

/// A zip entry's (uncompressed) bytes, spent from `left`, the input's
/// amplification bound (see `crate::AMPLIFICATION`).
fn read_entry(
    model: &SourceModel,
    entry: Entry,
    name: &str,
    left: &mut u64,
) -> Result<Vec<u8>, ImportError> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(model.buffers[0].as_slice()))
        .map_err(|e| zip_error(&model.path, e))?;
    let file = archive.by_index(entry.index).map_err(|e| zip_error(&model.path, e))?;
    let bad = |m: String| ImportError::new(&model.path, format!("entry '{name}': {m}"));
    let declared = file.size();
    // Deflate expands at most ~1032:1; more is a zip bomb.
    if declared > file.compressed_size().saturating_mul(1100) + 4096 {
        return Err(bad(format!(
            "claims to inflate {} bytes to {declared}",
            file.compressed_size()
        )));
    }
    crate::inflate(file, declared, left).map_err(bad)
}

/// Where a tensor's bytes are, checking that every element lies inside its
/// storage.
fn place(
    model: &SourceModel,
    name: &str,
    spec: &TensorSpec,
    storage: Storage,
) -> Result<TensorBytes, ImportError> {
    let err = |m: String| ImportError::tensor(&model.path, name, m);
    let size = spec.storage.dtype.size();
    // A legacy view narrows the root storage.
    let storage = match spec.storage.view {
        None => storage,
        Some((offset, count)) => {
            let start = offset.checked_mul(size).filter(|s| *s <= storage.len);
            let len = count.checked_mul(size);
            match (start, len) {
                (Some(s), Some(l)) if l <= storage.len - s => {
                    Storage { buffer: storage.buffer, start: storage.start + s, len: l }
                }
                _ => return Err(err("storage view lies outside its storage".into())),
            }
        }
    };
    let count = spec
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| err("too many elements".into()))?;
    if count == 0 {
        return Ok(TensorBytes::Contiguous { buffer: storage.buffer, offset: storage.start });
    }
    // A view may repeat storage elements (stride 0): gathering it makes
    // count * size bytes. Refuse sizes no real checkpoint has, so a tiny
    // file cannot ask for terabytes.
    let bytes = count.checked_mul(size).ok_or_else(|| err("too many elements".into()))?;
    if bytes > storage.len.max(1 << 20).saturating_mul(64) {
        return Err(err(format!(
            "a view of {bytes} bytes over a storage of {} bytes (repeated elements); refusing to expand it",
            storage.len
        )));
    }
    // The furthest element; strides are non-negative, so it bounds them all.
    let last = spec
        .shape
        .iter()
        .zip(&spec.strides)
        .try_fold(spec.offset, |acc, (&d, &s)| acc.checked_add((d - 1).checked_mul(s)?));
    let end = last.and_then(|l| l.checked_add(1)).and_then(|n| n.checked_mul(size));
    match end {
        Some(end) if end <= storage.len => {}
        _ => {
            return Err(err(format!(
            "data lies outside its storage '{}' ({} bytes): offset {}, shape {:?}, strides {:?}",
            spec.storage.key, storage.len, spec.offset, spec.shape, spec.strides
        )))
        }
    }
    let offset = storage.start + spec.offset * size;
    // Row-major strides; a dimension of size 1 may have any stride.
    let mut expected = 1usize;
    let mut contiguous = true;
    for (&d, &s) in spec.shape.iter().zip(&spec.strides).rev() {
        if d != 1 && s != expected {
            contiguous = false;
        }
        expected *= d;
    }
    Ok(if contiguous {
        TensorBytes::Contiguous { buffer: storage.buffer, offset }
    } else {
        TensorBytes::Strided { buffer: storage.buffer, offset, strides: spec.strides.clone() }
    })
}

/// Finds the tensors of pickle `p` and locates their bytes.
fn add_tensors(
    model: &mut SourceModel,
    p: &Pickle,
    storages: &mut Storages,
) -> Result<(), ImportError> {
    let mut finder =
        Finder { p, work: Work(p.work_left()), visits: 0, found: Vec::new(), name_bytes: 0 };
    finder.walk(model_root(p), "", 0).map_err(|e| ImportError::new(&model.path, e))?;
    let mut work = finder.work;
    let stem = model.path.file_stem().map_or("tensor".into(), |s| s.to_string_lossy().into_owned());
    for (name, id) in finder.found {
        let name = if name.is_empty() { stem.clone() } else { name };
        let Value::Call { func, args, .. } = p.get(id) else { continue };
        let spec = tensor_spec(p, func, *args, 0)
            .map_err(|e| ImportError::tensor(&model.path, &name, e))?;
        work.charge(
            spec.shape.len() + spec.strides.len() + spec.storage.key.len() + 8,
            "reading tensor records",
        )
        .map_err(|e| ImportError::tensor(&model.path, &name, e))?;
        let storage = storages.get(model, &spec.storage.key, &name)?;
        let bytes = place(model, &name, &spec, storage)?;
        model.tensors.push(SourceTensor {
            name,
            dtype: spec.storage.dtype,
            shape: spec.shape,
            bytes,
        });
    }
    Ok(())
}

/// Imports a PyTorch zip checkpoint or a TorchScript archive.
pub(super) fn import_zip(model: &mut SourceModel) -> Result<(), ImportError> {
    let path = model.path.clone();
    let mut entries = HashMap::new();
    {
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(model.buffers[0].as_slice()))
            .map_err(|e| zip_error(&path, e))?;
        for index in 0..archive.len() {
            let file = archive.by_index_raw(index).map_err(|e| zip_error(&path, e))?;
            let (Ok(data_start), Ok(size)) =
                (usize::try_from(file.data_start()), usize::try_from(file.size()))
            else {
                return Err(ImportError::new(
                    &path,
                    format!("entry '{}' is too large", file.name()),
                ));
            };
            let stored = file.compression() == zip::CompressionMethod::Stored;
            entries.insert(file.name().to_string(), Entry { index, data_start, size, stored });
        }
    }
    // `<prefix>/data.pkl`, the shallowest one.
    let pkl = entries
        .keys()
        .filter(|n| *n == "data.pkl" || n.ends_with("/data.pkl"))
        .min_by_key(|n| (n.matches('/').count(), n.len(), n.to_string()))
        .cloned()
        .ok_or_else(|| ImportError::new(&path, "no data.pkl in the archive"))?;
    let prefix = pkl[..pkl.len() - "data.pkl".len()].to_string();
    let mut inflate_left = crate::amplification_limit(model.buffers[0].as_slice().len());
    if let Some(&entry) = entries.get(&format!("{prefix}byteorder")) {
        let order = read_entry(model, entry, "byteorder", &mut inflate_left)?;
        match String::from_utf8_lossy(&order).trim() {
            "little" => {}
            "big" => {
                return Err(ImportError::new(&path, "big-endian checkpoints are not supported"))
            }
            other => return Err(ImportError::new(&path, format!("unknown byte order '{other}'"))),
        }
    }
    let pickled = read_entry(model, entries[&pkl], &pkl, &mut inflate_left)?;
    let options = Options { torchscript: model.format == Format::TorchScript };
    let (p, _) = pickle::load(&pickled, 0, options)
        .map_err(|e| ImportError::new(&path, format!("{pkl}: {e}")))?;
    let mut storages = Storages::Zip { entries, prefix, cache: HashMap::new(), inflate_left };
    add_tensors(model, &p, &mut storages)
}

/// Imports a legacy `torch.save` stream.
pub(super) fn import_legacy(model: &mut SourceModel) -> Result<(), ImportError> {
    let path = model.path.clone();
    let data = model.buffers[0].as_slice();
    let load = |at: usize, what: &str| {
        pickle::load(data, at, Options::default())
            .map_err(|e| ImportError::new(&path, format!("{what}: {e}")))
    };
    let (magic, at) = load(0, "magic number")?;
    if magic.get(magic.root()) != &Value::BigInt(MAGIC.to_vec()) {
        return Err(ImportError::new(&path, "not a legacy PyTorch file (bad magic number)"));
    }
    let (version, at) = load(at, "protocol version")?;
    if version.int(version.root()) != Some(LEGACY_VERSION) {
        return Err(ImportError::new(
            &path,
            format!("unsupported legacy protocol version {:?}", version.get(version.root())),
        ));
    }
    let (sys_info, at) = load(at, "sys_info")?;
    if let Value::Dict(pairs) = sys_info.get(sys_info.root()) {
        let little = pairs.iter().find(|&&(k, _)| sys_info.str(k) == Some("little_endian"));
        if let Some(&(_, v)) = little {
            if sys_info.get(v) == &Value::Bool(false) {
                return Err(ImportError::new(&path, "big-endian checkpoints are not supported"));
            }
        }
    }
    let (main, at) = load(at, "main pickle")?;
    let (keys, mut at) = load(at, "storage key list")?;
    // Each storage's element type, from the references to it.
    let mut dtypes = HashMap::new();
    let mut work = Work(main.work_left());
    for v in main.values() {
        if let Value::PersId(pid) = v {
            let r = storage_ref(&main, *pid).map_err(|e| ImportError::new(&path, e))?;
            work.charge(r.key.len() + 8, "reading storage references")
                .map_err(|e| ImportError::new(&path, e))?;
            dtypes.insert(r.key, r.dtype);
        }
    }
    let key_ids = keys
        .items(keys.root())
        .ok_or_else(|| ImportError::new(&path, "storage key list is not a list"))?;
    let mut storages = HashMap::new();
    for &k in key_ids {
        let key = match keys.get(k) {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            _ => return Err(ImportError::new(&path, "storage key list holds a non-string")),
        };
        let dtype = dtypes.get(&key).ok_or_else(|| {
            ImportError::new(&path, format!("storage '{key}' is listed but never referenced"))
        })?;
        let truncated = || ImportError::new(&path, format!("storage '{key}' is truncated"));
        let header: [u8; 8] = data
            .get(at..at.saturating_add(8))
            .and_then(|h| h.try_into().ok())
            .ok_or_else(truncated)?;
        let count = usize::try_from(u64::from_le_bytes(header)).map_err(|_| truncated())?;
        let start = at + 8;
        let len = count.checked_mul(dtype.size()).ok_or_else(truncated)?;
        let end = start.checked_add(len).filter(|&e| e <= data.len()).ok_or_else(truncated)?;
        storages.insert(key, Storage { buffer: 0, start, len });
        at = end;
    }
    add_tensors(model, &main, &mut Storages::Legacy(storages))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::open;
    use super::*;
    use crate::testutil;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/torch").join(name)
    }

    fn summary(m: &SourceModel) -> Vec<(String, RawDtype, Vec<usize>)> {
        m.tensors.iter().map(|t| (t.name.clone(), t.dtype, t.shape.clone())).collect()
    }

    fn values(m: &SourceModel, name: &str) -> Vec<f32> {
        let t =
            m.tensors.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no tensor {name}"));
        m.to_f32(t).unwrap().into_owned()
    }

    fn i64s(m: &SourceModel, name: &str) -> Vec<i64> {
        let t =
            m.tensors.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no tensor {name}"));
        m.bytes(t)
            .unwrap()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn legacy_magic_is_recognised() {
        let mut head = vec![0x80, 2, 0x8a, 10];
        head.extend_from_slice(&MAGIC);
        head.push(b'.');
        assert!(looks_like_legacy(&head));
        head[5] ^= 1;
        assert!(!looks_like_legacy(&head));
        assert!(!looks_like_legacy(b"\x80\x02"));
        assert!(!looks_like_legacy(b""));
    }

    #[test]
    fn nested_checkpoint() {
        let m = open(&fixture("nested.pt")).unwrap();
        assert_eq!(m.format, Format::TorchZip);
        // The `state_dict` prefix is dropped; optimizer state is ignored.
        assert_eq!(
            summary(&m),
            [
                ("conv1.weight".to_string(), RawDtype::F32, vec![2, 3]),
                ("conv1.bias".to_string(), RawDtype::F32, vec![2]),
                ("fc.weight".to_string(), RawDtype::F32, vec![3, 2]),
                ("scale".to_string(), RawDtype::F32, vec![]),
                ("half".to_string(), RawDtype::F16, vec![4]),
                ("steps".to_string(), RawDtype::I64, vec![3]),
            ]
        );
        assert_eq!(values(&m, "conv1.weight"), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(values(&m, "conv1.bias"), [-1.0, 1.0]);
        // fc.weight is conv1.weight's storage seen transposed.
        assert!(
            matches!(m.tensors[2].bytes, TensorBytes::Strided { ref strides, .. } if strides == &[1, 3])
        );
        assert_eq!(values(&m, "fc.weight"), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        // A 0-dim tensor at storage offset 2.
        assert_eq!(values(&m, "scale"), [0.25]);
        assert_eq!(values(&m, "half"), [1.0, -2.0, 0.5, 65504.0]);
        assert_eq!(i64s(&m, "steps"), [7, -8, 1 << 40]);
    }

    #[test]
    fn nested_lists_protocol4_and_compressed_entries() {
        let m = open(&fixture("lists.pt")).unwrap();
        assert_eq!(
            summary(&m),
            [
                ("layers.0".to_string(), RawDtype::F32, vec![2]),
                ("layers.1.w".to_string(), RawDtype::F64, vec![2, 2]),
                ("extra.0.b".to_string(), RawDtype::BF16, vec![2]),
            ]
        );
        assert_eq!(values(&m, "layers.0"), [1.5, 2.5], "a Parameter");
        assert_eq!(values(&m, "layers.1.w"), [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(values(&m, "extra.0.b"), [1.0, -3.0]);
        // The f64 storage is deflated in the archive, so it was inflated.
        assert!(m.buffers.len() > 1);
    }

    #[test]
    fn legacy_fixture() {
        let m = open(&fixture("legacy.pt")).unwrap();
        assert_eq!(m.format, Format::TorchLegacy);
        assert_eq!(
            summary(&m),
            [
                ("a".to_string(), RawDtype::F32, vec![2, 2]),
                ("b".to_string(), RawDtype::F32, vec![2]),
                ("c".to_string(), RawDtype::I32, vec![3]),
            ]
        );
        assert_eq!(values(&m, "a"), [1.0, 2.0, 3.0, 4.0]);
        // b shares a's storage at offset 4.
        assert_eq!(values(&m, "b"), [5.0, 6.0]);
        let t = &m.tensors[2];
        let c: Vec<i32> = m
            .bytes(t)
            .unwrap()
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(c, [-1, 0, 1]);
    }

    #[test]
    fn torchscript_fixture() {
        let m = open(&fixture("script.pt")).unwrap();
        assert_eq!(m.format, Format::TorchScript);
        assert_eq!(
            summary(&m),
            [
                ("encoder.0.weight".to_string(), RawDtype::F32, vec![2, 2]),
                ("encoder.0.bias".to_string(), RawDtype::F32, vec![2]),
                ("head.weight".to_string(), RawDtype::F32, vec![1, 2]),
            ]
        );
        assert_eq!(values(&m, "encoder.0.weight"), [1.0, 0.0, 0.0, 1.0]);
        assert_eq!(values(&m, "head.weight"), [0.5, -0.5]);
    }

    #[test]
    fn malicious_pickle_is_rejected_by_name() {
        let e = open(&fixture("malicious.pt")).unwrap_err();
        assert!(e.message.contains("global 'os.system' is not allowed"), "{e}");
        assert!(e.to_string().contains("malicious.pt"), "{e}");
        // The same pickle as a TorchScript archive is rejected too.
        let e = open(&fixture("malicious_script.pt")).unwrap_err();
        assert!(e.message.contains("global 'os.system' is not allowed"), "{e}");
    }

    #[test]
    fn out_of_bounds_and_big_endian_are_rejected() {
        let e = open(&fixture("out_of_bounds.pt")).unwrap_err();
        assert_eq!(e.tensor.as_deref(), Some("w"), "{e}");
        assert!(e.message.contains("outside its storage"), "{e}");
        let e = open(&fixture("big_endian.pt")).unwrap_err();
        assert!(e.message.contains("big-endian"), "{e}");
    }

    #[test]
    fn corrupted_fixtures_never_panic() {
        for name in ["nested.pt", "legacy.pt", "script.pt"] {
            let good = std::fs::read(fixture(name)).unwrap();
            let dir =
                std::env::temp_dir().join(format!("lsqr-torch-corrupt-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(name);
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            for round in 0..150 {
                let mut data = good.clone();
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if round % 3 == 0 {
                    data.truncate((state % data.len() as u64) as usize);
                } else {
                    let at = (state % data.len() as u64) as usize;
                    data[at] = (state >> 40) as u8;
                }
                std::fs::write(&path, &data).unwrap();
                if let Ok(m) = open(&path) {
                    for t in &m.tensors {
                        let _ = m.bytes(t);
                    }
                }
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn facenet_state_dicts() {
        let pnet = open(&testutil::model("facenet/pnet.pt")).unwrap();
        assert_eq!(pnet.format, Format::TorchLegacy);
        let f = RawDtype::F32;
        let want: Vec<(String, RawDtype, Vec<usize>)> = [
            ("conv1.weight", vec![10, 3, 3, 3]),
            ("conv1.bias", vec![10]),
            ("prelu1.weight", vec![10]),
            ("conv2.weight", vec![16, 10, 3, 3]),
            ("conv2.bias", vec![16]),
            ("prelu2.weight", vec![16]),
            ("conv3.weight", vec![32, 16, 3, 3]),
            ("conv3.bias", vec![32]),
            ("prelu3.weight", vec![32]),
            ("conv4_1.weight", vec![2, 32, 1, 1]),
            ("conv4_1.bias", vec![2]),
            ("conv4_2.weight", vec![4, 32, 1, 1]),
            ("conv4_2.bias", vec![4]),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_string(), f, s))
        .collect();
        assert_eq!(summary(&pnet), want);
        let params: usize = pnet.tensors.iter().map(|t| t.element_count()).sum();
        assert_eq!(params, 6632);
        for m in [
            &pnet,
            &open(&testutil::model("facenet/rnet.pt")).unwrap(),
            &open(&testutil::model("facenet/onet.pt")).unwrap(),
        ] {
            for t in &m.tensors {
                let v = m.to_f32(t).unwrap().into_owned();
                assert!(v.iter().all(|x| x.is_finite() && x.abs() < 100.0), "{}", t.name);
            }
        }
        let rnet = open(&testutil::model("facenet/rnet.pt")).unwrap();
        assert_eq!(rnet.tensors.len(), 16);
        assert_eq!(rnet.tensors.iter().map(|t| t.element_count()).sum::<usize>(), 100_178);
        let onet = open(&testutil::model("facenet/onet.pt")).unwrap();
        assert_eq!(onet.tensors.len(), 21);
        assert_eq!(onet.tensors.iter().map(|t| t.element_count()).sum::<usize>(), 389_040);
    }

    /// Pearson correlation.
    fn correlation(a: &[f32], b: &[f32]) -> f64 {
        let n = a.len() as f64;
        let ma = a.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let mb = b.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
        for (&x, &y) in a.iter().zip(b) {
            let (x, y) = (f64::from(x) - ma, f64::from(y) - mb);
            cov += x * y;
            va += x * x;
            vb += y * y;
        }
        cov / (va * vb).sqrt()
    }

    /// The TorchScript archive against the safetensors file of the same
    /// silero-vad 6.2.3 wheel. Names correspond as below and every shape
    /// matches; the STFT basis (computed, not trained) is bit-exact, but the
    /// trained weights of the safetensors file are another checkpoint: they
    /// correlate with the TorchScript ones (0.90 to 0.996) without being
    /// equal. The TorchScript weights are the ones of the wheel's ONNX
    /// exports, byte for byte (checked when the wheel is in the cache).
    #[test]
    fn silero_torchscript_matches_safetensors() {
        let jit = open(&testutil::model("silero/silero_vad.jit")).unwrap();
        assert_eq!(jit.format, Format::TorchScript);
        assert_eq!(jit.tensors.len(), 32);
        // Two empty state buffers, then the 16 kHz and the 8 kHz models.
        assert_eq!((jit.tensors[0].name.as_str(), &jit.tensors[0].shape), ("_state", &vec![0]));
        assert_eq!(jit.tensors.iter().filter(|t| t.name.starts_with("_model.")).count(), 15);
        assert_eq!(jit.tensors.iter().filter(|t| t.name.starts_with("_model_8k.")).count(), 15);
        let st = open(&testutil::model("silero/silero_vad_16k.safetensors")).unwrap();
        let rename = |name: &str| -> String {
            let (layer, param) = name.split_once('.').unwrap();
            let path = match layer {
                "stft_conv" => return "_model.stft.forward_basis_buffer".to_string(),
                "conv1" => "_model.encoder.0.reparam_conv",
                "conv2" => "_model.encoder.1.reparam_conv",
                "conv3" => "_model.encoder.2.reparam_conv",
                "conv4" => "_model.encoder.3.reparam_conv",
                "lstm_cell" => "_model.decoder.rnn",
                "final_conv" => "_model.decoder.decoder.2",
                other => panic!("unexpected safetensors tensor {other}"),
            };
            format!("{path}.{param}")
        };
        assert_eq!(st.tensors.len(), 15);
        for t in &st.tensors {
            let name = rename(&t.name);
            let j = jit
                .tensors
                .iter()
                .find(|j| j.name == name)
                .unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!((j.dtype, &j.shape), (t.dtype, &t.shape), "{name}");
            let (a, b) = (jit.to_f32(j).unwrap().into_owned(), st.to_f32(t).unwrap().into_owned());
            if t.name == "stft_conv.weight" {
                assert!(jit.bytes(j).unwrap() == st.bytes(t).unwrap(), "{name} is not bit-exact");
            } else if a.len() > 1 {
                let r = correlation(&a, &b);
                assert!(r > 0.85, "{name} vs {}: correlation {r}", t.name);
            }
        }
        // Bit-exact against the package's own ONNX export of the same model.
        let onnx = std::fs::read(testutil::model("silero/silero_vad.onnx")).unwrap();
        for t in jit.tensors.iter().filter(|t| t.byte_len() > 0) {
            let bytes = jit.bytes(t).unwrap();
            assert!(
                onnx.windows(bytes.len()).any(|w| w == &bytes[..]),
                "{} is not in silero_vad.onnx",
                t.name
            );
        }
    }
}

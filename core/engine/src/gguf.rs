//! GGUF reader (versions 2 and 3): metadata, tensor infos and the tensor data region.
//!
//! The header is parsed from a byte slice with every count, length and offset checked against
//! the bytes that are really there, so a truncated or hostile file yields a [`GgufError`] naming
//! the field instead of a panic or a huge allocation. Tensor data is never copied here: callers
//! get sub-slices of the memory-mapped file.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

/// Hard caps on header fields. They are far above what real models use (a 150k-token vocabulary,
/// a few thousand tensors) and exist so that a lying count cannot make us allocate.
pub mod limits {
    /// Metadata key/value pairs.
    pub const MAX_KV: u64 = 1 << 16;
    /// Tensors in one file.
    pub const MAX_TENSORS: u64 = 1 << 20;
    /// Elements of one metadata array.
    pub const MAX_ARRAY_LEN: u64 = 1 << 24;
    /// Bytes of one string (key, value or tensor name).
    pub const MAX_STRING_LEN: u64 = 1 << 24;
    /// Nesting of arrays inside arrays.
    pub const MAX_ARRAY_DEPTH: u32 = 4;
    /// Dimensions of one tensor (ggml's GGML_MAX_DIMS).
    pub const MAX_DIMS: u32 = 4;
    /// Elements of one tensor.
    pub const MAX_ELEMENTS: u64 = 1 << 40;
}

/// Why a GGUF file was rejected. Every variant names the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or mapped.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path given.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file (magic is {0:02x?}, expected \"GGUF\")")]
    BadMagic([u8; 4]),
    /// A version we do not read (1 is obsolete; big-endian files show up as huge versions).
    #[error("unsupported GGUF version {0} (supported: 2, 3; big-endian files are not supported)")]
    UnsupportedVersion(u32),
    /// The file ended inside a field.
    #[error("truncated file: {field} needs {needed} bytes at offset {offset}, file has {len}")]
    Truncated {
        /// The field being read.
        field: String,
        /// Offset where it starts.
        offset: u64,
        /// Bytes it needs.
        needed: u64,
        /// Length of the file.
        len: u64,
    },
    /// A count or length above its cap in [`limits`].
    #[error("{field} is {value}, above the limit of {limit}")]
    TooLarge {
        /// The field.
        field: String,
        /// The value read.
        value: u64,
        /// The cap.
        limit: u64,
    },
    /// A metadata value type id we do not know.
    #[error("{field}: unknown metadata value type {ty}")]
    BadValueType {
        /// The key whose value is bad.
        field: String,
        /// The type id read.
        ty: u32,
    },
    /// A string that is not UTF-8.
    #[error("{field} is not valid UTF-8")]
    BadUtf8 {
        /// The field.
        field: String,
    },
    /// A tensor description that is inconsistent.
    #[error("tensor {tensor}: {reason}")]
    BadTensor {
        /// The tensor name.
        tensor: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A metadata key appears twice, or a tensor name does.
    #[error("duplicate {what} {name:?}")]
    Duplicate {
        /// "metadata key" or "tensor".
        what: &'static str,
        /// The repeated name.
        name: String,
    },
    /// `general.alignment` is not a power of two (or zero).
    #[error("general.alignment is {0}, expected a power of two between 1 and 65536")]
    BadAlignment(u64),
    /// A metadata key the caller needs is absent or has the wrong type.
    #[error("metadata {key}: {reason}")]
    Metadata {
        /// The key.
        key: String,
        /// Absent, or the type found.
        reason: String,
    },
}

impl GgufError {
    fn truncated(field: impl Into<String>, offset: usize, needed: u64, len: usize) -> Self {
        Self::Truncated { field: field.into(), offset: offset as u64, needed, len: len as u64 }
    }
}

/// The ggml tensor types this reader knows. Only some have compute kernels (see `quant`); the
/// others are recognised so that a file using them fails with a clear message at load time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    BF16,
}

impl GgmlType {
    /// Maps ggml's numeric type id.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            9 => Self::Q8_1,
            10 => Self::Q2_K,
            11 => Self::Q3_K,
            12 => Self::Q4_K,
            13 => Self::Q5_K,
            14 => Self::Q6_K,
            15 => Self::Q8_K,
            30 => Self::BF16,
            _ => return None,
        })
    }

    /// Elements per block.
    pub fn block_len(self) -> u64 {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 | Self::Q8_1 => 32,
            Self::Q2_K | Self::Q3_K | Self::Q4_K | Self::Q5_K | Self::Q6_K | Self::Q8_K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> u64 {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q8_1 => 36,
            Self::Q2_K => 84,
            Self::Q3_K => 110,
            Self::Q4_K => 144,
            Self::Q5_K => 176,
            Self::Q6_K => 210,
            Self::Q8_K => 292,
        }
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer, if it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Self::I8(v) => Some(v.into()),
            Self::I16(v) => Some(v.into()),
            Self::I32(v) => Some(v.into()),
            Self::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// The value as a float, if it is any number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Self::U8(_) => "u8",
            Self::I8(_) => "i8",
            Self::U16(_) => "u16",
            Self::I16(_) => "i16",
            Self::U32(_) => "u32",
            Self::I32(_) => "i32",
            Self::F32(_) => "f32",
            Self::Bool(_) => "bool",
            Self::String(_) => "string",
            Self::Array(_) => "array",
            Self::U64(_) => "u64",
            Self::I64(_) => "i64",
            Self::F64(_) => "f64",
        }
    }
}

/// Where one tensor lives and what it holds. `dims[0]` is the innermost (contiguous) dimension,
/// as in ggml: a weight matrix with `dims = [k, n]` has `n` rows of `k` elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Sizes, innermost first.
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Absolute offset of the data in the file.
    pub offset: u64,
    /// Bytes of data.
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A parsed GGUF header: what [`Gguf`] holds besides the mapping. Parsing needs only bytes, which
/// is what the fuzz target drives.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    /// Tensor descriptions in file order.
    pub tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    /// Alignment of the data region (`general.alignment`, default 32).
    pub alignment: u64,
    /// Absolute offset where tensor data begins.
    pub data_offset: u64,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, field: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        let remaining = (self.buf.len() - self.pos) as u64;
        if n > remaining {
            return Err(GgufError::truncated(field(), self.pos, n, self.buf.len()));
        }
        let n = n as usize;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, field: &dyn Fn() -> String) -> Result<u32, GgufError> {
        self.array::<4>(field).map(u32::from_le_bytes)
    }

    fn u64(&mut self, field: &dyn Fn() -> String) -> Result<u64, GgufError> {
        self.array::<8>(field).map(u64::from_le_bytes)
    }

    fn string(&mut self, field: &dyn Fn() -> String) -> Result<String, GgufError> {
        let len = self.u64(field)?;
        if len > limits::MAX_STRING_LEN {
            return Err(GgufError::TooLarge {
                field: format!("{} (string length)", field()),
                value: len,
                limit: limits::MAX_STRING_LEN,
            });
        }
        let bytes = self.take(len, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::BadUtf8 { field: field() })
    }

    fn value(&mut self, ty: u32, depth: u32, field: &dyn Fn() -> String) -> Result<Value, GgufError> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>(field)?[0]),
            1 => Value::I8(self.array::<1>(field)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(field)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(field)?)),
            4 => Value::U32(u32::from_le_bytes(self.array(field)?)),
            5 => Value::I32(i32::from_le_bytes(self.array(field)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(field)?)),
            7 => match self.array::<1>(field)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    return Err(GgufError::BadValueType { field: format!("{} (bool byte {b})", field()), ty });
                }
            },
            8 => Value::String(self.string(field)?),
            9 => {
                if depth >= limits::MAX_ARRAY_DEPTH {
                    return Err(GgufError::TooLarge {
                        field: format!("{} (array nesting)", field()),
                        value: u64::from(depth) + 1,
                        limit: u64::from(limits::MAX_ARRAY_DEPTH),
                    });
                }
                let elem_ty = self.u32(field)?;
                let len = self.u64(field)?;
                // Every element takes at least one byte, so a length past the end of the file
                // is a lie we can catch before allocating.
                let remaining = (self.buf.len() - self.pos) as u64;
                if len > limits::MAX_ARRAY_LEN {
                    return Err(GgufError::TooLarge {
                        field: format!("{} (array length)", field()),
                        value: len,
                        limit: limits::MAX_ARRAY_LEN,
                    });
                }
                if len > remaining {
                    return Err(GgufError::truncated(
                        format!("{} (array of {len})", field()),
                        self.pos,
                        len,
                        self.buf.len(),
                    ));
                }
                // Reserve by what the smallest encoding could hold, not by the count: a `Value` is
                // 32 bytes, so trusting the count would let a 1-byte-per-item array cost 32x.
                let mut items = Vec::with_capacity((len as usize).min(4096));
                for i in 0..len {
                    let f = || format!("{}[{i}]", field());
                    items.push(self.value(elem_ty, depth + 1, &f)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(u64::from_le_bytes(self.array(field)?)),
            11 => Value::I64(i64::from_le_bytes(self.array(field)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(field)?)),
            _ => return Err(GgufError::BadValueType { field: field(), ty }),
        })
    }
}

impl GgufHeader {
    /// Parses the header from the whole file's bytes (tensor offsets are checked against `buf`).
    pub fn parse(buf: &[u8]) -> Result<Self, GgufError> {
        let mut c = Cursor { buf, pos: 0 };
        let magic: [u8; 4] = c.array(&|| "magic".into())?;
        if &magic != b"GGUF" {
            return Err(GgufError::BadMagic(magic));
        }
        let version = c.u32(&|| "version".into())?;
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let n_tensors = c.u64(&|| "tensor_count".into())?;
        let n_kv = c.u64(&|| "metadata_kv_count".into())?;
        if n_tensors > limits::MAX_TENSORS {
            return Err(GgufError::TooLarge {
                field: "tensor_count".into(),
                value: n_tensors,
                limit: limits::MAX_TENSORS,
            });
        }
        if n_kv > limits::MAX_KV {
            return Err(GgufError::TooLarge { field: "metadata_kv_count".into(), value: n_kv, limit: limits::MAX_KV });
        }

        let mut metadata = Vec::new();
        let mut index = HashMap::new();
        for i in 0..n_kv {
            let key = c.string(&|| format!("metadata[{i}].key"))?;
            let ty = c.u32(&|| format!("{key} (type)"))?;
            let value = c.value(ty, 0, &|| key.clone())?;
            if index.insert(key.clone(), metadata.len()).is_some() {
                return Err(GgufError::Duplicate { what: "metadata key", name: key });
            }
            metadata.push((key, value));
        }

        let alignment = match index.get("general.alignment").map(|&i| &metadata[i].1) {
            None => 32,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() && a <= 65536 => a,
                Some(a) => return Err(GgufError::BadAlignment(a)),
                None => {
                    return Err(GgufError::Metadata {
                        key: "general.alignment".into(),
                        reason: format!("expected an unsigned integer, found {}", v.type_name()),
                    });
                }
            },
        };

        let mut raw = Vec::new();
        for i in 0..n_tensors {
            let name = c.string(&|| format!("tensor[{i}].name"))?;
            let n_dims = c.u32(&|| format!("{name} (n_dims)"))?;
            if n_dims == 0 || n_dims > limits::MAX_DIMS {
                return Err(GgufError::BadTensor {
                    tensor: name,
                    reason: format!("n_dims is {n_dims}, expected 1..={}", limits::MAX_DIMS),
                });
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for d in 0..n_dims {
                dims.push(c.u64(&|| format!("{name} (dims[{d}])"))?);
            }
            let ty_id = c.u32(&|| format!("{name} (type)"))?;
            let offset = c.u64(&|| format!("{name} (offset)"))?;
            raw.push((name, dims, ty_id, offset));
        }
        let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
        let file_len = buf.len() as u64;

        let mut tensors = Vec::with_capacity(raw.len());
        let mut tensor_index = HashMap::new();
        for (name, dims, ty_id, rel) in raw {
            let bad = |reason: String| GgufError::BadTensor { tensor: name.clone(), reason };
            let ty = GgmlType::from_id(ty_id).ok_or_else(|| bad(format!("unknown type id {ty_id}")))?;
            let mut elements: u64 = 1;
            for (d, &n) in dims.iter().enumerate() {
                if n == 0 {
                    return Err(bad(format!("dims[{d}] is 0")));
                }
                elements = elements
                    .checked_mul(n)
                    .filter(|&e| e <= limits::MAX_ELEMENTS)
                    .ok_or_else(|| bad(format!("element count exceeds {}", limits::MAX_ELEMENTS)))?;
            }
            if dims[0] % ty.block_len() != 0 {
                return Err(bad(format!(
                    "dims[0] = {} is not a multiple of the {ty} block length {}",
                    dims[0],
                    ty.block_len()
                )));
            }
            let size = elements / ty.block_len() * ty.block_bytes();
            if rel % alignment != 0 {
                return Err(bad(format!("offset {rel} is not a multiple of the alignment {alignment}")));
            }
            let offset = data_offset
                .checked_add(rel)
                .filter(|o| o.checked_add(size).is_some_and(|end| end <= file_len))
                .ok_or_else(|| {
                    bad(format!(
                        "data [{rel}, +{size}) lies outside the file (data region starts at {data_offset}, file is {file_len} bytes)"
                    ))
                })?;
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(GgufError::Duplicate { what: "tensor", name });
            }
            tensors.push(TensorInfo { name, dims, ty, offset, size });
        }

        Ok(Self { version, metadata, index, tensors, tensor_index, alignment, data_offset })
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| GgufError::Metadata { key: key.into(), reason: "missing".into() })
    }

    fn wrong_type(key: &str, want: &str, v: &Value) -> GgufError {
        GgufError::Metadata { key: key.into(), reason: format!("expected {want}, found {}", v.type_name()) }
    }

    /// A required unsigned integer.
    pub fn u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.require(key)?;
        v.as_u64().ok_or_else(|| Self::wrong_type(key, "an unsigned integer", v))
    }

    /// A required number as f32.
    pub fn f32(&self, key: &str) -> Result<f32, GgufError> {
        let v = self.require(key)?;
        v.as_f64().map(|x| x as f32).ok_or_else(|| Self::wrong_type(key, "a number", v))
    }

    /// A required string.
    pub fn str(&self, key: &str) -> Result<&str, GgufError> {
        match self.require(key)? {
            Value::String(s) => Ok(s),
            v => Err(Self::wrong_type(key, "a string", v)),
        }
    }

    /// An optional string (present with another type is an error).
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(Self::wrong_type(key, "a string", v)),
        }
    }

    /// An optional unsigned integer.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.get(key).map(|v| v.as_u64().ok_or_else(|| Self::wrong_type(key, "an unsigned integer", v))).transpose()
    }

    /// An optional bool.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(Self::wrong_type(key, "a bool", v)),
        }
    }

    /// A required array.
    pub fn array(&self, key: &str) -> Result<&[Value], GgufError> {
        match self.require(key)? {
            Value::Array(a) => Ok(a),
            v => Err(Self::wrong_type(key, "an array", v)),
        }
    }

    /// An array of strings (cloned).
    pub fn string_array(&self, key: &str) -> Result<Vec<String>, GgufError> {
        self.array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                v => Err(Self::wrong_type(&format!("{key}[{i}]"), "a string", v)),
            })
            .collect()
    }

    /// An array of integers as i32.
    pub fn i32_array(&self, key: &str) -> Result<Vec<i32>, GgufError> {
        self.array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_i64()
                    .and_then(|x| i32::try_from(x).ok())
                    .ok_or_else(|| Self::wrong_type(&format!("{key}[{i}]"), "an i32", v))
            })
            .collect()
    }

    /// An array of numbers as f32 (`tokenizer.ggml.scores`).
    pub fn f32_array(&self, key: &str) -> Result<Vec<f32>, GgufError> {
        self.array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_f64().map(|x| x as f32).ok_or_else(|| Self::wrong_type(&format!("{key}[{i}]"), "a number", v))
            })
            .collect()
    }

    /// A tensor's description by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }
}

/// An open, memory-mapped GGUF file.
#[derive(Debug)]
pub struct Gguf {
    header: GgufHeader,
    map: memmap2::Mmap,
}

impl Gguf {
    /// Maps and parses the file at `path`.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let io = |source| GgufError::Io { path: path.display().to_string(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the mapping is read-only; model files are not modified while served (the model
        // store writes a new file and renames it into place, never rewriting one in use).
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let header = GgufHeader::parse(&map)?;
        Ok(Self { header, map })
    }

    /// The parsed header.
    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    /// The bytes of a tensor (bounds were checked at parse time).
    pub fn data(&self, t: &TensorInfo) -> &[u8] {
        &self.map[t.offset as usize..(t.offset + t.size) as usize]
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds GGUF bytes for tests: metadata as (key, type id, encoded value), tensors as
    /// (name, dims, type id, data).
    #[derive(Default)]
    pub(crate) struct Builder {
        pub kv: Vec<(String, u32, Vec<u8>)>,
        pub tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
    }

    pub(crate) fn enc_str(s: &str) -> Vec<u8> {
        let mut v = (s.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    }

    impl Builder {
        pub fn kv_u32(&mut self, k: &str, v: u32) -> &mut Self {
            self.kv.push((k.into(), 4, v.to_le_bytes().to_vec()));
            self
        }
        pub fn kv_f32(&mut self, k: &str, v: f32) -> &mut Self {
            self.kv.push((k.into(), 6, v.to_le_bytes().to_vec()));
            self
        }
        pub fn kv_bool(&mut self, k: &str, v: bool) -> &mut Self {
            self.kv.push((k.into(), 7, vec![u8::from(v)]));
            self
        }
        pub fn kv_str(&mut self, k: &str, v: &str) -> &mut Self {
            self.kv.push((k.into(), 8, enc_str(v)));
            self
        }
        pub fn kv_str_array(&mut self, k: &str, v: &[&str]) -> &mut Self {
            let mut b = 8u32.to_le_bytes().to_vec();
            b.extend_from_slice(&(v.len() as u64).to_le_bytes());
            for s in v {
                b.extend(enc_str(s));
            }
            self.kv.push((k.into(), 9, b));
            self
        }
        pub fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, data: Vec<u8>) -> &mut Self {
            self.tensors.push((name.into(), dims.to_vec(), ty, data));
            self
        }
        pub fn build(&self) -> Vec<u8> {
            let mut out = b"GGUF".to_vec();
            out.extend_from_slice(&3u32.to_le_bytes());
            out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
            out.extend_from_slice(&(self.kv.len() as u64).to_le_bytes());
            for (k, ty, v) in &self.kv {
                out.extend(enc_str(k));
                out.extend_from_slice(&ty.to_le_bytes());
                out.extend_from_slice(v);
            }
            let mut offset = 0u64;
            let mut offsets = Vec::new();
            for (_, _, _, data) in &self.tensors {
                offsets.push(offset);
                offset = (offset + data.len() as u64).div_ceil(32) * 32;
            }
            for ((name, dims, ty, _), off) in self.tensors.iter().zip(&offsets) {
                out.extend(enc_str(name));
                out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
                for d in dims {
                    out.extend_from_slice(&d.to_le_bytes());
                }
                out.extend_from_slice(&ty.to_le_bytes());
                out.extend_from_slice(&off.to_le_bytes());
            }
            while !out.len().is_multiple_of(32) {
                out.push(0);
            }
            let base = out.len();
            for ((_, _, _, data), off) in self.tensors.iter().zip(&offsets) {
                out.resize(base + *off as usize, 0);
                out.extend_from_slice(data);
            }
            out
        }
    }

    fn sample() -> Vec<u8> {
        let mut b = Builder::default();
        b.kv_str("general.architecture", "llama")
            .kv_u32("llama.block_count", 2)
            .kv_f32("llama.rope.freq_base", 10000.0)
            .kv_bool("flag", true)
            .kv_str_array("tokenizer.ggml.tokens", &["a", "b"])
            .tensor("w", &[4, 2], 0, vec![0u8; 32])
            .tensor("h", &[32], 1, vec![1u8; 64]);
        b.build()
    }

    #[test]
    fn parses_metadata_and_tensors() {
        let bytes = sample();
        let h = GgufHeader::parse(&bytes).unwrap();
        assert_eq!(h.version, 3);
        assert_eq!(h.str("general.architecture").unwrap(), "llama");
        assert_eq!(h.u64("llama.block_count").unwrap(), 2);
        assert_eq!(h.f32("llama.rope.freq_base").unwrap(), 10000.0);
        assert_eq!(h.opt_bool("flag").unwrap(), Some(true));
        assert_eq!(h.string_array("tokenizer.ggml.tokens").unwrap(), vec!["a", "b"]);
        let w = h.tensor("w").unwrap();
        assert_eq!((w.ty, w.size, w.elements()), (GgmlType::F32, 32, 8));
        let t = h.tensor("h").unwrap();
        assert_eq!(t.ty, GgmlType::F16);
        assert_eq!(t.offset % 32, 0);
        assert!(matches!(h.str("llama.block_count"), Err(GgufError::Metadata { .. })));
        assert!(matches!(h.u64("missing"), Err(GgufError::Metadata { .. })));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = sample();
        for len in 0..bytes.len() - 64 {
            assert!(GgufHeader::parse(&bytes[..len]).is_err(), "len {len} parsed");
        }
    }

    #[test]
    fn lying_counts_are_rejected_without_allocating() {
        let mut bytes = sample();
        // tensor_count
        bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(GgufHeader::parse(&bytes), Err(GgufError::TooLarge { .. })));
        let mut b = Builder::default();
        b.kv.push(("arr".into(), 9, {
            let mut v = 0u32.to_le_bytes().to_vec();
            v.extend_from_slice(&(1u64 << 23).to_le_bytes());
            v
        }));
        let err = GgufHeader::parse(&b.build()).unwrap_err();
        assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
        assert!(err.to_string().contains("arr"));
    }

    #[test]
    fn tensor_outside_file_is_rejected() {
        let mut bytes = sample();
        let len = bytes.len();
        bytes.truncate(len - 8);
        let err = GgufHeader::parse(&bytes).unwrap_err();
        assert!(err.to_string().contains("tensor h"), "{err}");
    }

    #[test]
    fn bad_magic_version_and_types() {
        assert!(matches!(GgufHeader::parse(b"GGML\x03\0\0\0"), Err(GgufError::BadMagic(_))));
        assert!(matches!(GgufHeader::parse(b"GGUF\x01\0\0\0"), Err(GgufError::UnsupportedVersion(1))));
        let mut b = Builder::default();
        b.tensor("x", &[32], 99, vec![0; 128]);
        assert!(GgufHeader::parse(&b.build()).unwrap_err().to_string().contains("unknown type id 99"));
        let mut b = Builder::default();
        b.tensor("q", &[31], 8, vec![0; 128]);
        assert!(GgufHeader::parse(&b.build()).unwrap_err().to_string().contains("block length"));
        let mut b = Builder::default();
        b.kv_u32("k", 1).kv_u32("k", 2);
        assert!(matches!(GgufHeader::parse(&b.build()), Err(GgufError::Duplicate { .. })));
    }

    /// A deterministic stand-in for the cargo-fuzz target, so the property runs on stable in CI:
    /// random byte flips of a valid file must never panic.
    #[test]
    fn mutated_headers_never_panic() {
        let base = sample();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut b = base.clone();
            let flips = 1 + next() % 4;
            for _ in 0..flips {
                let i = (next() % b.len() as u64) as usize;
                b[i] = next() as u8;
            }
            let _ = GgufHeader::parse(&b);
        }
    }
}

//! Writing runnable models from Rust.

use std::io::{Cursor, Seek, Write};
use std::path::Path;

use lsqr_kernels::conv::Conv2dParams;
use lsqr_kernels::Pool2d;

use lsqr_codec::{quantize, QuantizeOptions};
use lsqr_format::{FormatError, Graph, Layer, LsqFileWriter, LsqWriter, Value};

/// Why a model could not be written.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// Writing the container (or a graph the builder recorded as invalid).
    Format(FormatError),
    /// Quantizing a weight.
    Codec {
        /// The weight's tensor name.
        tensor: String,
        /// What went wrong.
        source: lsqr_codec::CodecError,
    },
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::Format(e) => e.fmt(f),
            BuildError::Codec { tensor, source } => write!(f, "tensor '{tensor}': {source}"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Format(e) => Some(e),
            BuildError::Codec { source, .. } => Some(source),
        }
    }
}

impl From<FormatError> for BuildError {
    fn from(e: FormatError) -> Self {
        BuildError::Format(e)
    }
}

type Error = BuildError;

/// How a weight is stored.
#[derive(Debug, Clone, PartialEq)]
pub enum WeightFormat {
    /// Raw f32, exact.
    F32,
    /// Quantized with these options.
    Quantized(QuantizeOptions),
}

#[derive(Debug)]
struct Pending {
    name: String,
    shape: Vec<usize>,
    data: Vec<f32>,
    format: WeightFormat,
}

/// Builds a `.lsq` model the [runtime](super) can run: graph inputs with
/// their shapes (written as `input_shape.<name>` metadata), layers with
/// their weights, graph outputs.
///
/// Layer methods name their output value first, then their inputs; weight
/// tensors are named `<name>.weight` and `<name>.bias`. Biases are always
/// kept f32 (small, and quantizing them costs accuracy for no space).
/// Methods chain; a mistake (a weight slice that does not fill its shape,
/// an unknown activation) is reported by [`ModelBuilder::to_bytes`] or
/// [`ModelBuilder::write`], which also check the graph as the format
/// reader does. Whether the runtime can *run* the graph is checked by
/// [`super::Plan::new`].
///
/// ```
/// use lsqr_runtime::{ModelBuilder, Plan, WeightFormat};
///
/// let mut b = ModelBuilder::new();
/// b.input("x", &[1, 3])
///     .linear("h", "x", "fc", &[1.0, 2.0, 3.0, -1.0, 0.0, 1.0], [2, 3], Some(&[0.5, 0.0]), &WeightFormat::F32)
///     .activation("y", "h", "relu")
///     .output("y");
/// let bytes = b.to_bytes()?;
/// let file = lsqr_format::LsqFile::from_bytes(&bytes)?;
/// let plan = Plan::new(&file)?;
/// let mut arena = vec![0u8; plan.arena_len()];
/// let mut run = plan.bind(&mut arena)?;
/// run.set_input(0, &[1.0, 1.0, 1.0])?;
/// run.run()?;
/// assert_eq!(run.output(0)?, [6.5, 0.0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct ModelBuilder {
    inputs: Vec<(String, Vec<usize>)>,
    outputs: Vec<String>,
    layers: Vec<Layer>,
    tensors: Vec<Pending>,
    metadata: Vec<(String, Value)>,
    error: Option<String>,
}

/// The activations [`ModelBuilder::activation`] accepts.
const ACTIVATIONS: &[&str] =
    &["relu", "relu6", "sigmoid", "tanh", "gelu", "gelu_tanh", "silu", "hardsigmoid", "hardswish"];

fn ints(v: &[usize]) -> Value {
    Value::IntList(v.iter().map(|&d| d as i64).collect())
}

impl ModelBuilder {
    /// An empty model.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds graph input `name` of `shape`.
    pub fn input(&mut self, name: &str, shape: &[usize]) -> &mut Self {
        self.inputs.push((name.into(), shape.to_vec()));
        self
    }

    /// Marks value `name` as a graph output (in call order).
    pub fn output(&mut self, name: &str) -> &mut Self {
        self.outputs.push(name.into());
        self
    }

    /// Adds a metadata entry (besides the `input_shape.*` ones).
    pub fn metadata(&mut self, key: &str, value: Value) -> &mut Self {
        self.metadata.push((key.into(), value));
        self
    }

    /// Adds a weight tensor for hand-made layers ([`ModelBuilder::layer`]).
    pub fn tensor(
        &mut self,
        name: &str,
        data: &[f32],
        shape: &[usize],
        format: &WeightFormat,
    ) -> &mut Self {
        let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if count != Some(data.len()) {
            self.fail(format!("tensor '{name}': {} values given for shape {shape:?}", data.len()));
        }
        self.tensors.push(Pending {
            name: name.into(),
            shape: shape.to_vec(),
            data: data.to_vec(),
            format: format.clone(),
        });
        self
    }

    /// Adds any layer as it is.
    pub fn layer(&mut self, layer: Layer) -> &mut Self {
        self.layers.push(layer);
        self
    }

    fn fail(&mut self, message: String) {
        self.error.get_or_insert(message);
    }

    fn simple(
        &mut self,
        op: &str,
        out: &str,
        inputs: &[&str],
        attrs: Vec<(String, Value)>,
    ) -> &mut Self {
        self.layer(Layer {
            op: op.into(),
            inputs: inputs.iter().map(|&s| s.into()).collect(),
            outputs: vec![out.into()],
            weights: Vec::new(),
            attrs,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn weighted(
        &mut self,
        op: &str,
        out: &str,
        x: &str,
        name: &str,
        (w, w_shape): (&[f32], &[usize]),
        bias: Option<&[f32]>,
        format: &WeightFormat,
        attrs: Vec<(String, Value)>,
    ) -> &mut Self {
        let weight = format!("{name}.weight");
        self.tensor(&weight, w, w_shape, format);
        let mut weights = vec![weight];
        if let Some(b) = bias {
            let bias_name = format!("{name}.bias");
            self.tensor(&bias_name, b, &[b.len()], &WeightFormat::F32);
            weights.push(bias_name);
        }
        self.layer(Layer {
            op: op.into(),
            inputs: vec![x.into()],
            outputs: vec![out.into()],
            weights,
            attrs,
        })
    }

    /// `out = x · wᵀ + bias`, `w` of `[out_features, in_features]`.
    #[allow(clippy::too_many_arguments)]
    pub fn linear(
        &mut self,
        out: &str,
        x: &str,
        name: &str,
        w: &[f32],
        w_shape: [usize; 2],
        bias: Option<&[f32]>,
        format: &WeightFormat,
    ) -> &mut Self {
        self.weighted("linear", out, x, name, (w, &w_shape), bias, format, Vec::new())
    }

    /// 2-D convolution, `w` of `[out, in / groups, kh, kw]`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d(
        &mut self,
        out: &str,
        x: &str,
        name: &str,
        w: &[f32],
        w_shape: [usize; 4],
        bias: Option<&[f32]>,
        params: &Conv2dParams,
        format: &WeightFormat,
    ) -> &mut Self {
        let attrs = vec![
            ("stride".into(), ints(&params.stride)),
            ("padding".into(), ints(&params.padding)),
            ("dilation".into(), ints(&params.dilation)),
            ("groups".into(), Value::Int(params.groups as i64)),
        ];
        self.weighted("conv2d", out, x, name, (w, &w_shape), bias, format, attrs)
    }

    /// An attribute-free activation: `relu`, `relu6`, `sigmoid`, `tanh`,
    /// `gelu`, `gelu_tanh`, `silu`, `hardsigmoid` or `hardswish`.
    pub fn activation(&mut self, out: &str, x: &str, op: &str) -> &mut Self {
        if !ACTIVATIONS.contains(&op) {
            self.fail(format!("'{op}' is not an activation (one of {})", ACTIVATIONS.join(", ")));
        }
        self.simple(op, out, &[x], Vec::new())
    }

    /// `x` where positive, `alpha x` elsewhere.
    pub fn leaky_relu(&mut self, out: &str, x: &str, alpha: f32) -> &mut Self {
        self.simple("leaky_relu", out, &[x], vec![("alpha".into(), Value::Float(alpha.into()))])
    }

    fn pool(&mut self, op: &str, out: &str, x: &str, pool: &Pool2d) -> &mut Self {
        let attrs = vec![
            ("kernel".into(), ints(&pool.kernel)),
            ("stride".into(), ints(&pool.stride)),
            ("padding".into(), ints(&pool.padding)),
        ];
        self.simple(op, out, &[x], attrs)
    }

    /// 2-D max pooling.
    pub fn max_pool2d(&mut self, out: &str, x: &str, pool: &Pool2d) -> &mut Self {
        self.pool("max_pool2d", out, x, pool)
    }

    /// 2-D average pooling (padding not counted).
    pub fn avg_pool2d(&mut self, out: &str, x: &str, pool: &Pool2d) -> &mut Self {
        self.pool("avg_pool2d", out, x, pool)
    }

    /// Mean of each channel plane: `[n, c, 1, 1]`.
    pub fn global_avg_pool2d(&mut self, out: &str, x: &str) -> &mut Self {
        self.simple("global_avg_pool2d", out, &[x], Vec::new())
    }

    /// `a + b`, broadcasting.
    pub fn add(&mut self, out: &str, a: &str, b: &str) -> &mut Self {
        self.simple("add", out, &[a, b], Vec::new())
    }

    /// `a * b`, broadcasting.
    pub fn mul(&mut self, out: &str, a: &str, b: &str) -> &mut Self {
        self.simple("mul", out, &[a, b], Vec::new())
    }

    /// Merges the dims from `start_dim` on.
    pub fn flatten(&mut self, out: &str, x: &str, start_dim: usize) -> &mut Self {
        self.simple("flatten", out, &[x], vec![("start_dim".into(), Value::Int(start_dim as i64))])
    }

    /// Softmax over the last axis.
    pub fn softmax(&mut self, out: &str, x: &str) -> &mut Self {
        self.simple("softmax", out, &[x], Vec::new())
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        let mut w = LsqWriter::new(Cursor::new(Vec::new()))?;
        self.emit(&mut w)?;
        Ok(w.finish()?.into_inner())
    }

    /// Writes the file at `path` (atomically).
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let mut file = LsqFileWriter::create(path)?;
        self.emit(file.writer())?;
        Ok(file.finish()?)
    }

    fn emit<W: Write + Seek>(&self, w: &mut LsqWriter<W>) -> Result<(), Error> {
        if let Some(message) = &self.error {
            return Err(Error::Format(FormatError::Invalid { message: message.clone() }));
        }
        for (name, shape) in &self.inputs {
            w.add_metadata(&format!("input_shape.{name}"), ints(shape))?;
        }
        for (key, value) in &self.metadata {
            w.add_metadata(key, value.clone())?;
        }
        for t in &self.tensors {
            match &t.format {
                WeightFormat::F32 => w.add_raw_f32(&t.name, &t.shape, &t.data)?,
                WeightFormat::Quantized(options) => {
                    let q = quantize(&t.data, &t.shape, options)
                        .map_err(|source| Error::Codec { tensor: t.name.clone(), source })?;
                    w.add_quantized(&t.name, &q)?;
                }
            }
        }
        w.set_graph(Graph {
            inputs: self.inputs.iter().map(|(n, _)| n.clone()).collect(),
            outputs: self.outputs.clone(),
            layers: self.layers.clone(),
        });
        Ok(())
    }
}

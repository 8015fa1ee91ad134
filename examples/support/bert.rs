//! A BERT encoder with sentence-transformers' mean pooling and L2
//! normalisation (the architecture of all-MiniLM-L6-v2), run on the weights
//! of a `.lsq` file. Shared by `examples/minilm.rs` and
//! `crates/lsqr-cli/tests/minilm_embeddings.rs`.
//!
//! A `.lsq` made from safetensors holds weights but no graph, so the micro
//! runtime cannot run it: the graph is written here by hand, on the
//! kernels' operators. Every weight matrix goes through
//! `lsqr_runtime::weight_of` into the packed linear kernels, so a quantized
//! file is decoded by the same code as any model the runtime runs, and a
//! float file (`lsqr quantize --keep '*'`) takes the same path on f32
//! weights: two files differ only by their weights, which is what comparing
//! their embeddings is meant to measure.
//!
//! One sentence at a time, unpadded: the attention mask is then all ones,
//! so attention needs no mask and the mean pooling is over every token.

#![allow(dead_code)] // each includer uses a part

use lsqr::format::LsqFile;
use lsqr::kernels::layout::transpose_into;
use lsqr::kernels::packed::{linear_into, linear_scratch_len, PackedWeight};
use lsqr::kernels::reduce::{reduce_into, ReduceOp};
use lsqr::kernels::{add_into, batched_matmul_into, gelu, layer_norm, softmax, OpError};
use lsqr::runtime::weight_of;

/// What the weights' shapes do not tell.
pub struct Config {
    /// Attention heads (the hidden size is split among them).
    pub heads: usize,
    /// LayerNorm's epsilon (`layer_norm_eps` of the model's config.json).
    pub layer_norm_eps: f32,
}

/// all-MiniLM-L6-v2's config.json: 12 heads of 32, eps 1e-12.
pub const MINILM_L6_V2: Config = Config { heads: 12, layer_norm_eps: 1e-12 };

/// `y = x W^T + b`.
struct Linear<'f> {
    weight: PackedWeight<'f>,
    bias: Vec<f32>,
}

/// `(x - mean) / sqrt(var + eps) * gamma + beta` over the hidden axis.
struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Layer<'f> {
    query: Linear<'f>,
    key: Linear<'f>,
    value: Linear<'f>,
    attention_out: Linear<'f>,
    attention_norm: Norm,
    intermediate: Linear<'f>,
    output: Linear<'f>,
    output_norm: Norm,
}

/// The activations of one forward pass. They are kept between sentences so
/// that embedding a list allocates only while sentences grow longer than
/// any before; each is resized to the current sentence's exact length
/// because the kernels check lengths exactly.
#[derive(Default)]
struct Buffers {
    /// Hidden states `[tokens, hidden]`, in and out of every layer.
    x: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// `q`, `k`, `v` head-major: `[heads, tokens, d]`, `[heads, d, tokens]`
    /// (`k` transposed, ready for the product), `[heads, tokens, d]`.
    qh: Vec<f32>,
    kt: Vec<f32>,
    vh: Vec<f32>,
    /// Attention weights `[heads, tokens, tokens]`.
    scores: Vec<f32>,
    /// Attention output, head-major `[heads, tokens, d]`.
    context: Vec<f32>,
    /// A `[tokens, hidden]` result before its residual add.
    branch: Vec<f32>,
    /// The MLP's `[tokens, intermediate]`.
    inner: Vec<f32>,
    /// One decoded embedding row.
    row: Vec<f32>,
    /// `linear_into`'s scratch.
    scratch: Vec<f32>,
}

/// A BERT encoder over the tensors of one `.lsq` file, looked up by their
/// Hugging Face (safetensors) names. Built once; [`Bert::embed`] then runs
/// any number of sentences through the same buffers.
pub struct Bert<'f> {
    word: PackedWeight<'f>,
    position: PackedWeight<'f>,
    token_type: PackedWeight<'f>,
    embedding_norm: Norm,
    layers: Vec<Layer<'f>>,
    hidden: usize,
    intermediate: usize,
    heads: usize,
    eps: f32,
    buffers: Buffers,
    /// While recording: per weight name, the sum of squares of each input
    /// column the weight has multiplied, the number of rows, and the first
    /// and last input row of each call ([`Bert::recorded_rows`]).
    recorded: Option<std::collections::BTreeMap<String, Recorded>>,
}

/// What recording keeps of one weight's inputs.
type Recorded = (Vec<f64>, usize, Vec<Vec<f32>>);

/// Adds the squares of `x` (`[rows, cols]`) to the record of `name`.
fn record(
    recorded: &mut Option<std::collections::BTreeMap<String, Recorded>>,
    name: String,
    x: &[f32],
    cols: usize,
) {
    let Some(map) = recorded else { return };
    let (sums, rows, kept) = map.entry(name).or_insert_with(|| (vec![0.0; cols], 0, Vec::new()));
    for row in x.chunks_exact(cols) {
        for (s, &v) in sums.iter_mut().zip(row) {
            *s += f64::from(v) * f64::from(v);
        }
        *rows += 1;
    }
    let n = x.len() / cols.max(1);
    for r in [0, n.saturating_sub(1)].into_iter().take(n.min(2)) {
        kept.push(x[r * cols..(r + 1) * cols].to_vec());
    }
}

/// A missing tensor is named, so that a file of another model (or one made
/// with renamed tensors) says what it lacks.
fn view<'f>(file: &'f LsqFile<'_>, name: &str) -> Result<lsqr::format::TensorView<'f>, String> {
    if file.tensor_info(name).is_none() {
        return Err(format!("the file has no tensor `{name}`: not a BERT checkpoint?"));
    }
    file.tensor(name).map_err(|e| format!("{name}: {e}"))
}

/// A weight matrix as the kernels take it (quantized codes stay packed).
fn matrix<'f>(
    file: &'f LsqFile<'_>,
    name: &str,
    rows: Option<usize>,
    cols: Option<usize>,
) -> Result<PackedWeight<'f>, String> {
    let w = weight_of(&view(file, name)?).map_err(|e| format!("{name}: {e}"))?;
    let ok = w.shape().len() == 2
        && rows.is_none_or(|r| r == w.rows())
        && cols.is_none_or(|c| c == w.cols());
    if !ok {
        return Err(format!(
            "{name}: shape {:?}, expected [{}, {}]",
            w.shape(),
            rows.map_or("_".into(), |r| r.to_string()),
            cols.map_or("_".into(), |c| c.to_string())
        ));
    }
    Ok(w)
}

/// A bias or LayerNorm vector: raw f32 in files from `lsqr quantize`, but
/// a quantized one is decoded too.
fn vector(file: &LsqFile<'_>, name: &str, len: usize) -> Result<Vec<f32>, String> {
    let v = view(file, name)?.to_f32_vec().map_err(|e| format!("{name}: {e}"))?;
    if v.len() != len {
        return Err(format!("{name}: {} values, expected {len}", v.len()));
    }
    Ok(v)
}

fn linear<'f>(
    file: &'f LsqFile<'_>,
    prefix: &str,
    out: usize,
    inp: usize,
) -> Result<Linear<'f>, String> {
    Ok(Linear {
        weight: matrix(file, &format!("{prefix}.weight"), Some(out), Some(inp))?,
        bias: vector(file, &format!("{prefix}.bias"), out)?,
    })
}

fn norm(file: &LsqFile<'_>, prefix: &str, len: usize) -> Result<Norm, String> {
    Ok(Norm {
        gamma: vector(file, &format!("{prefix}.weight"), len)?,
        beta: vector(file, &format!("{prefix}.bias"), len)?,
    })
}

/// `v` resized to `len` values; its allocation is kept.
fn sized(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    v.resize(len, 0.0);
    v
}

/// The kernels' error, with the step that raised it.
fn at(what: &'static str, layer: usize) -> impl Fn(OpError) -> String {
    move |e| format!("layer {layer}, {what}: {e}")
}

impl<'f> Bert<'f> {
    /// Looks up and checks every tensor the forward pass uses; the number
    /// of layers is the number of `encoder.layer.N` prefixes present, the
    /// sizes are the embedding table's width and the MLP's first matrix.
    pub fn new(file: &'f LsqFile<'_>, config: &Config) -> Result<Self, String> {
        let word = matrix(file, "embeddings.word_embeddings.weight", None, None)?;
        let hidden = word.cols();
        if config.heads == 0 || hidden % config.heads != 0 {
            return Err(format!(
                "hidden size {hidden} is not a multiple of {} heads",
                config.heads
            ));
        }
        let position = matrix(file, "embeddings.position_embeddings.weight", None, Some(hidden))?;
        let token_type =
            matrix(file, "embeddings.token_type_embeddings.weight", None, Some(hidden))?;
        let embedding_norm = norm(file, "embeddings.LayerNorm", hidden)?;
        let intermediate =
            matrix(file, "encoder.layer.0.intermediate.dense.weight", None, Some(hidden))?.rows();
        let mut layers = Vec::new();
        while file
            .tensor_info(&format!("encoder.layer.{}.attention.self.query.weight", layers.len()))
            .is_some()
        {
            let p = format!("encoder.layer.{}", layers.len());
            let lin = |name: &str, out, inp| linear(file, &format!("{p}.{name}"), out, inp);
            let ln = |name: &str| norm(file, &format!("{p}.{name}"), hidden);
            layers.push(Layer {
                query: lin("attention.self.query", hidden, hidden)?,
                key: lin("attention.self.key", hidden, hidden)?,
                value: lin("attention.self.value", hidden, hidden)?,
                attention_out: lin("attention.output.dense", hidden, hidden)?,
                attention_norm: ln("attention.output.LayerNorm")?,
                intermediate: lin("intermediate.dense", intermediate, hidden)?,
                output: lin("output.dense", hidden, intermediate)?,
                output_norm: ln("output.LayerNorm")?,
            });
        }
        Ok(Bert {
            word,
            position,
            token_type,
            embedding_norm,
            layers,
            hidden,
            intermediate,
            heads: config.heads,
            eps: config.layer_norm_eps,
            buffers: Buffers::default(),
            recorded: None,
        })
    }

    /// The embedding width.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Encoder layers found in the file.
    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    /// The most tokens a sentence may have (special tokens included): one
    /// per row of the position table.
    pub fn max_tokens(&self) -> usize {
        self.position.rows()
    }

    /// Starts recording the inputs of every linear layer (see
    /// [`Bert::importance`]); clears what was recorded before.
    pub fn record_inputs(&mut self) {
        self.recorded = Some(Default::default());
    }

    /// Per linear weight (by its tensor name): the mean square of each
    /// input feature over the tokens run since [`Bert::record_inputs`],
    /// floored at 1 % of the weight's mean (features the text never
    /// excites still count a little): the importance weights
    /// `lsqr quantize --importance` takes.
    ///
    /// The embedding tables are gathered, not multiplied: a token reads one
    /// row, so an error in a table reaches the output through one row in
    /// `rows`, and each of its columns weighs `1 / rows` (every row taken
    /// equally often). Without this the budget would weigh a table's
    /// errors as if every row were read by every token.
    pub fn importance(&self) -> Vec<(String, Vec<f32>)> {
        let Some(map) = &self.recorded else { return Vec::new() };
        let tables = [
            ("embeddings.word_embeddings.weight", &self.word),
            ("embeddings.position_embeddings.weight", &self.position),
            ("embeddings.token_type_embeddings.weight", &self.token_type),
        ];
        let gathers = tables.iter().map(|(name, table)| {
            let weight = 1.0 / table.rows().max(1) as f32;
            (name.to_string(), vec![weight; table.cols()])
        });
        map.iter()
            .map(|(name, (sums, rows, _))| {
                let ms: Vec<f64> = sums.iter().map(|s| s / (*rows).max(1) as f64).collect();
                let floor = 0.01 * ms.iter().sum::<f64>() / ms.len().max(1) as f64;
                (name.clone(), ms.iter().map(|&m| m.max(floor) as f32).collect())
            })
            .chain(gathers)
            .collect()
    }

    /// Per linear weight (by its tensor name): the first and last input row
    /// of every call since [`Bert::record_inputs`] (real activations, for
    /// measuring a batch-1 kernel on them).
    pub fn recorded_rows(&self) -> Vec<(String, Vec<Vec<f32>>)> {
        let Some(map) = &self.recorded else { return Vec::new() };
        map.iter().map(|(name, (_, _, kept))| (name.clone(), kept.clone())).collect()
    }

    /// The last hidden states `[tokens, hidden]` of one sentence's token ids
    /// (`[CLS] ... [SEP]`, as the tokenizer gives them, unpadded).
    pub fn forward(&mut self, token_ids: &[u32]) -> Result<&[f32], String> {
        let (n, h, heads) = (token_ids.len(), self.hidden, self.heads);
        let d = h / heads;
        if n == 0 || n > self.max_tokens() {
            return Err(format!("{n} tokens: 1 to {} are supported", self.max_tokens()));
        }
        let b = &mut self.buffers;

        // Embeddings: a gather of rows, decoded one at a time, so a
        // quantized table is never decoded whole.
        let x = sized(&mut b.x, n * h);
        let row = sized(&mut b.row, h);
        for (t, (&id, xt)) in token_ids.iter().zip(x.chunks_exact_mut(h)).enumerate() {
            let id = id as usize;
            if id >= self.word.rows() {
                return Err(format!(
                    "token id {id} is outside the vocabulary ({})",
                    self.word.rows()
                ));
            }
            self.word.decode_row(id, xt).map_err(|e| format!("word embedding {id}: {e}"))?;
            // Single-sentence input: every token has type 0.
            for (table, r) in [(&self.position, t), (&self.token_type, 0)] {
                table.decode_row(r, row).map_err(|e| format!("embedding row {r}: {e}"))?;
                xt.iter_mut().zip(row.iter()).for_each(|(a, b)| *a += b);
            }
        }
        let en = &self.embedding_norm;
        layer_norm(x, h, &en.gamma, &en.beta, self.eps).map_err(|e| format!("embeddings: {e}"))?;

        let scale = 1.0 / (d as f32).sqrt();
        let scratch_len = self
            .layers
            .iter()
            .flat_map(|l| [&l.query, &l.intermediate, &l.output])
            .map(|l| linear_scratch_len(&l.weight, n))
            .max()
            .unwrap_or(0);
        let scratch = sized(&mut b.scratch, scratch_len);
        let name = |i: usize, part: &str| format!("encoder.layer.{i}.{part}.weight");
        for (i, l) in self.layers.iter().enumerate() {
            let x = sized(&mut b.x, n * h);
            for part in ["attention.self.query", "attention.self.key", "attention.self.value"] {
                record(&mut self.recorded, name(i, part), x, h);
            }
            // Self-attention.
            let q = sized(&mut b.q, n * h);
            linear_into(&l.query.weight, Some(&l.query.bias), x, n, q, scratch)
                .map_err(at("query", i))?;
            // The 1/sqrt(d) of the scores, applied to q (n h values rather
            // than heads n^2).
            q.iter_mut().for_each(|v| *v *= scale);
            let k = sized(&mut b.k, n * h);
            linear_into(&l.key.weight, Some(&l.key.bias), x, n, k, scratch)
                .map_err(at("key", i))?;
            let v = sized(&mut b.v, n * h);
            linear_into(&l.value.weight, Some(&l.value.bias), x, n, v, scratch)
                .map_err(at("value", i))?;
            let qh = sized(&mut b.qh, n * h);
            transpose_into(q, &[n, heads, d], &[1, 0, 2], qh).map_err(at("q heads", i))?;
            let kt = sized(&mut b.kt, n * h);
            transpose_into(k, &[n, heads, d], &[1, 2, 0], kt).map_err(at("k heads", i))?;
            let vh = sized(&mut b.vh, n * h);
            transpose_into(v, &[n, heads, d], &[1, 0, 2], vh).map_err(at("v heads", i))?;
            let scores = sized(&mut b.scores, heads * n * n);
            batched_matmul_into(qh, &[heads, n, d], kt, &[heads, d, n], scores)
                .map_err(at("scores", i))?;
            softmax(scores, n).map_err(at("softmax", i))?;
            let context = sized(&mut b.context, n * h);
            batched_matmul_into(scores, &[heads, n, n], vh, &[heads, n, d], context)
                .map_err(at("context", i))?;
            // Back to [tokens, heads * d], in q's buffer (q is spent).
            transpose_into(context, &[heads, n, d], &[1, 0, 2], q).map_err(at("merge heads", i))?;
            record(&mut self.recorded, name(i, "attention.output.dense"), q, h);
            let branch = sized(&mut b.branch, n * h);
            let ao = &l.attention_out;
            linear_into(&ao.weight, Some(&ao.bias), q, n, branch, scratch)
                .map_err(at("attention output", i))?;
            // Post-LN residual: x = norm(x + branch), summed into k's
            // buffer (k is spent) and swapped in.
            add_into(branch, &[n * h], x, &[n * h], k).map_err(at("attention residual", i))?;
            let an = &l.attention_norm;
            layer_norm(k, h, &an.gamma, &an.beta, self.eps).map_err(at("attention norm", i))?;
            std::mem::swap(&mut b.x, &mut b.k);

            // MLP.
            let x = &b.x[..];
            let inner = sized(&mut b.inner, n * self.intermediate);
            let im = &l.intermediate;
            record(&mut self.recorded, name(i, "intermediate.dense"), x, h);
            linear_into(&im.weight, Some(&im.bias), x, n, inner, scratch)
                .map_err(at("intermediate", i))?;
            gelu(inner);
            record(&mut self.recorded, name(i, "output.dense"), inner, self.intermediate);
            let branch = sized(&mut b.branch, n * h);
            linear_into(&l.output.weight, Some(&l.output.bias), inner, n, branch, scratch)
                .map_err(at("output", i))?;
            let k = sized(&mut b.k, n * h);
            add_into(branch, &[n * h], x, &[n * h], k).map_err(at("output residual", i))?;
            let on = &l.output_norm;
            layer_norm(k, h, &on.gamma, &on.beta, self.eps).map_err(at("output norm", i))?;
            std::mem::swap(&mut b.x, &mut b.k);
        }
        Ok(&b.x[..n * h])
    }

    /// The sentence embedding of one sentence's token ids: the mean of the
    /// last hidden states over the tokens, scaled to unit length (as
    /// sentence-transformers' Pooling and Normalize modules, whose norm has
    /// a floor of 1e-12).
    pub fn embed(&mut self, token_ids: &[u32]) -> Result<Vec<f32>, String> {
        let h = self.hidden;
        let states = self.forward(token_ids)?;
        let n = states.len() / h;
        let mut pooled = vec![0.0f32; h];
        reduce_into(ReduceOp::Mean, states, &[n, h], &[0], &mut pooled)
            .map_err(|e| format!("mean pooling: {e}"))?;
        let mut norm = [0.0f32];
        reduce_into(ReduceOp::L2, &pooled, &[h], &[0], &mut norm)
            .map_err(|e| format!("normalisation: {e}"))?;
        let inv = 1.0 / norm[0].max(1e-12);
        pooled.iter_mut().for_each(|v| *v *= inv);
        Ok(pooled)
    }
}

/// One sentence's embedding with all-MiniLM-L6-v2's config. Builds the
/// model each call: for more than one sentence, keep a [`Bert`].
pub fn embed(file: &LsqFile<'_>, token_ids: &[u32]) -> Result<Vec<f32>, String> {
    Bert::new(file, &MINILM_L6_V2)?.embed(token_ids)
}

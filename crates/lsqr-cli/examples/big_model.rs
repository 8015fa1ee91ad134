//! Writes a large synthetic `.safetensors` model for memory measurements:
//! `cargo run --release -p lsqr-cli --example big_model -- OUT GIB`
//! (default 2 GiB of f32 4096 x 4096 matrices plus biases). Each tensor is
//! generated when the serializer asks for it, so this tool's own memory is
//! one tensor.

use std::borrow::Cow;

use safetensors::{Dtype, View};

struct Lazy {
    shape: Vec<usize>,
    seed: u64,
}

impl View for &Lazy {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        let n = self.shape.iter().product();
        let w =
            lsqr::synthetic::weights(lsqr::synthetic::Distribution::Laplacian, n, 0.02, self.seed);
        Cow::Owned(w.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        4 * self.shape.iter().product::<usize>()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args.next().ok_or("usage: big_model OUT [GIB]")?;
    let gib: usize = args.next().map_or(Ok(2), |s| s.parse())?;
    let matrices = gib * 16; // 64 MiB each
    let tensors: Vec<(String, Lazy)> = (0..matrices)
        .flat_map(|i| {
            [
                (format!("layers.{i}.weight"), Lazy { shape: vec![4096, 4096], seed: i as u64 }),
                (format!("layers.{i}.bias"), Lazy { shape: vec![4096], seed: 1000 + i as u64 }),
            ]
        })
        .collect();
    safetensors::serialize_to_file(
        tensors.iter().map(|(n, t)| (n.as_str(), t)),
        None,
        std::path::Path::new(&out),
    )?;
    println!("wrote {out}: {matrices} matrices of 4096 x 4096 f32");
    Ok(())
}

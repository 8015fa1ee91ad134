//! Writes the example model of ffi-examples/ (default
//! `target/ffi/example.lsq`): `cargo run -p lsqr-capi --example
//! make_example_model -- [PATH]`.

#[path = "../gen/example_model.rs"]
mod example_model;

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "target/ffi/example.lsq".into());
    let path = std::path::Path::new(&path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("creating the output directory");
    }
    std::fs::write(path, example_model::build()).expect("writing the model");
    println!("wrote {}", path.display());
}

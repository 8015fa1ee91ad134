//! Writes include/lsqr.h from the crate's exports and cbindgen.toml:
//! `cargo run -p lsqr-capi --example gen_header`.

#[path = "../gen/header.rs"]
mod header;

fn main() {
    let path = header::header_path();
    header::write(&path);
    println!("wrote {}", path.display());
}

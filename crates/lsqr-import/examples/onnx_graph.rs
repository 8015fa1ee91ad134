//! Prints the runtime graph an ONNX model imports as:
//! `cargo run -p lsqr-import --example onnx_graph -- model.onnx [NAME=d0,d1,...]`.

use std::collections::BTreeMap;
use std::path::Path;

use lsqr_import::onnx_graph::{import_graph, GraphOptions};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: onnx_graph model.onnx [NAME=d0,d1,...]...");
        std::process::exit(2);
    };
    let mut options = GraphOptions::default();
    for a in &args[1..] {
        let (name, dims) = a.split_once('=').expect("NAME=d0,d1,...");
        let dims = dims.split(',').map(|d| d.trim().parse().expect("a dim")).collect();
        options.input_shapes.push((name.to_string(), dims));
    }
    match import_graph(Path::new(path), &options) {
        Ok(g) => {
            let mut ops: BTreeMap<&str, usize> = BTreeMap::new();
            for l in &g.graph.layers {
                *ops.entry(l.op.as_str()).or_default() += 1;
            }
            println!(
                "opset {}; inputs {:?}; outputs {:?}",
                g.opset, g.input_shapes, g.graph.outputs
            );
            println!("{} layers: {ops:?}", g.graph.layers.len());
            let weights: usize = g.tensors.iter().map(|t| t.data.len()).sum();
            println!("{} tensors, {weights} values", g.tensors.len());
            if std::env::var_os("VERBOSE").is_some() {
                for l in &g.graph.layers {
                    println!(
                        "{} {:?} -> {:?} w={:?} {:?}",
                        l.op, l.inputs, l.outputs, l.weights, l.attrs
                    );
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

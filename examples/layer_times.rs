//! Where a model's time goes: runs a `.lsq` graph on one `.npy` input per
//! graph input (leading rows taken to fit a smaller batch) and times each
//! layer with `Runner::run_layer`, then prints the time per op and the
//! slowest layers with their output shapes.
//!
//! `cargo run --release --example layer_times -- M.lsq INPUT.npy [REPEAT]`

use std::time::Instant;

use lsqr::format::LsqFile;
use lsqr::runtime::Plan;

#[path = "support/npy.rs"]
mod npy;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        return Err("usage: layer_times M.lsq INPUT.npy... [REPEAT]".into());
    }
    let file = LsqFile::open(&args[0])?;
    let plan = Plan::new(&file)?;
    let n_in = plan.inputs().len();
    let repeat: usize = args.get(1 + n_in).map_or(Ok(20), |s| s.parse())?;
    let mut arena = vec![0u8; plan.arena_len()];
    let mut runner = plan.bind(&mut arena)?;
    for (i, info) in plan.inputs().iter().enumerate() {
        let (_, data) = npy::read_npy(args[1 + i].as_ref())?;
        let len: usize = info.shape.iter().product();
        runner.set_input(i, data.get(..len).ok_or("input too small")?)?;
    }
    let graph = file.graph().ok_or("no graph")?;
    // `constant` layers are folded into the plan, and some layers fused.
    let layers = plan.layer_count();
    let graph_layers: Vec<_> = (0..layers)
        .map(|i| plan.graph_layer(i).and_then(|l| graph.layers.get(l)).ok_or("no such layer"))
        .collect::<Result<_, _>>()?;
    let mut times = vec![Vec::with_capacity(repeat); layers];
    runner.run()?;
    for _ in 0..repeat {
        for (i, t) in times.iter_mut().enumerate() {
            let start = Instant::now();
            runner.run_layer(i)?;
            t.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    let median: Vec<f64> = times
        .iter_mut()
        .map(|t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect();
    let total: f64 = median.iter().sum();
    let shapes: std::collections::HashMap<&str, &[usize]> =
        plan.value_shapes().map(|v| (v.name.as_str(), v.shape.as_slice())).collect();
    let mut per_op: std::collections::BTreeMap<&str, (f64, usize)> = Default::default();
    for (l, &t) in graph_layers.iter().zip(&median) {
        let e = per_op.entry(l.op.as_str()).or_default();
        e.0 += t;
        e.1 += 1;
    }
    let mut per_op: Vec<_> = per_op.into_iter().collect();
    per_op.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    println!("total (sum of layer medians): {total:.3} ms over {layers} layers");
    println!("{:<20} {:>9} {:>6} {:>6}", "op", "ms", "%", "count");
    for (op, (t, n)) in &per_op {
        println!("{op:<20} {t:>9.3} {:>6.1} {n:>6}", 100.0 * t / total);
    }
    let mut order: Vec<usize> = (0..layers).collect();
    order.sort_by(|&a, &b| median[b].total_cmp(&median[a]));
    println!("\nslowest layers:");
    let top = std::env::var("LT_TOP").ok().and_then(|s| s.parse().ok()).unwrap_or(25);
    for &i in order.iter().take(top) {
        let l = graph_layers[i];
        let ins: Vec<_> =
            l.inputs.iter().map(|n| shapes.get(n.as_str()).copied().unwrap_or(&[])).collect();
        let out = l.outputs.first().and_then(|n| shapes.get(n.as_str()).copied()).unwrap_or(&[]);
        let ws: Vec<String> = l
            .weights
            .iter()
            .map(|w| {
                file.tensor_index(w)
                    .map(|t| format!("{:?}", file.tensors()[t].shape))
                    .unwrap_or_default()
            })
            .collect();
        println!(
            "{i:>4} {:<14} {:>8.3} ms  in {ins:?} w {ws:?} -> {out:?} {:?}",
            l.op, median[i], l.attrs
        );
    }
    Ok(())
}

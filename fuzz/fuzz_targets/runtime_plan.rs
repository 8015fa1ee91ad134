//! Fuzzes the runtime on any `.lsq` bytes, as they are and with their
//! checksums repaired (so that mutated graphs reach the planner): a file
//! that opens is planned (every op's checks), and a plan whose arena is
//! small is bound and run on a constant input. Nothing may panic; errors
//! are values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lsqr_format::LsqFile;
use lsqr_runtime::Plan;

/// Arenas above this are not allocated (the plan's checks still ran).
const MAX_ARENA: usize = 64 << 20;

fuzz_target!(|data: &[u8]| {
    plan_and_run(data);
    if let Some(repaired) = lsqr_format::raw::repair_preamble(data) {
        plan_and_run(&repaired);
    }
});

fn plan_and_run(data: &[u8]) {
    let Ok(file) = LsqFile::from_bytes(data) else { return };
    let Ok(plan) = Plan::new(&file) else { return };
    if plan.arena_len() > MAX_ARENA {
        return;
    }
    let mut arena = vec![0u8; plan.arena_len()];
    let Ok(mut runner) = plan.bind(&mut arena) else { return };
    for (i, input) in plan.inputs().iter().enumerate() {
        let n: usize = input.shape.iter().product();
        let _ = runner.set_input(i, &vec![0.5; n]);
    }
    let _ = runner.run();
    for i in 0..plan.outputs().len() {
        let _ = runner.output(i);
    }
}

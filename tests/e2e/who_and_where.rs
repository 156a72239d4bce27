//! Who and where, in a hit event: a captured stack's words that point into code are named
//! (`? function+offset/size`), so the caller of a breakpointed function shows up.

use crate::common::{drvisor_with_hits, ensure, Failed, Trial};

pub fn trials() -> Vec<Trial> {
    vec![Trial::test(
        "who_and_where::a_captured_stack_names_the_caller",
        captured_stack_names_the_caller,
    )]
}

fn captured_stack_names_the_caller() -> Result<(), Failed> {
    let (run, hits) = drvisor_with_hits(&[
        "run",
        "--scenario",
        "exec",
        "--cmdline",
        "count=3",
        "--break",
        "drv_target_0",
        "--capture",
        "64",
    ])?;
    run.expect_code(0)?;
    ensure(hits.len() == 3, || format!("{} hits\n{run}", hits.len()))?;
    for hit in &hits {
        let words = hit["symbolized"]
            .as_array()
            .ok_or("no `symbolized` in a hit event")?;
        let first = words.first().ok_or("no stack word named")?;
        let symbol = first["symbol"].as_str().unwrap_or_default();
        // At the breakpoint (the function's first instruction) RSP points at the return
        // address into its caller, the test guest's exec loop.
        ensure(
            symbol.starts_with("? ") && symbol.contains("exec_loop") && symbol.contains("+0x"),
            || format!("the first named word is {first}, not the return into exec_loop"),
        )?;
        ensure(first["addr"] == hit["regs"]["rsp"], || {
            format!(
                "the return address is not at RSP: {first} / rsp {}",
                hit["regs"]["rsp"]
            )
        })?;
    }
    Ok(())
}

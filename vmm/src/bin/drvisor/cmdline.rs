//! The kernel command line drvisor builds: `scenario=` from `--scenario`, `ncpus=` from
//! `--vcpus` for the embedded guest, then `--cmdline`. A word of `--cmdline` that would
//! silently override another flag is refused instead.

use drvisor::guest_image;
use drvisor::layout::CMDLINE_MAX;
use drvisor::quote::cut;

use crate::cli::RunArgs;
use crate::Failure;

/// The kernel command line: the scenario, the vCPU count for the test guest, and the user's.
/// A word of `--cmdline` that sets what another flag sets is refused, not silently taken.
pub fn command_line(args: &RunArgs) -> Result<String, Failure> {
    let mut parts = Vec::new();
    let words: Vec<&str> = args.cmdline.split_whitespace().collect();
    if let Some(scenario) = &args.scenario {
        if args.kernel.is_none() && !guest_image::SCENARIOS.contains(&scenario.as_str()) {
            return Err(Failure::usage(format!(
                "unknown scenario `{}`; the embedded guest knows: {}",
                cut(scenario),
                guest_image::SCENARIOS.join(", ")
            )));
        }
        if scenario.is_empty() || scenario.contains(char::is_whitespace) {
            return Err(Failure::usage(format!(
                "--scenario `{}`: a scenario is one word",
                cut(scenario)
            )));
        }
        if let Some(word) = words.iter().find(|w| w.starts_with("scenario=")) {
            return Err(Failure::usage(format!(
                "--cmdline {} conflicts with --scenario {}; give the scenario once",
                cut(word),
                cut(scenario)
            )));
        }
        parts.push(format!("scenario={scenario}"));
    }
    if args.kernel.is_none() {
        if let Some(word) = words.iter().find(|w| w.starts_with("ncpus=")) {
            return Err(Failure::usage(format!(
                "--cmdline {}: drvisor sets ncpus= from --vcpus for the embedded guest; use --vcpus",
                cut(word)
            )));
        }
        if args.vcpus > guest_image::MAX_VCPUS {
            // The guest would refuse `ncpus=` itself, with its status 2: a guest status that
            // reads like drvisor's own "your mistake".
            return Err(Failure::usage(format!(
                "--vcpus {} is out of range: the embedded test guest runs 1 to {} vCPUs",
                args.vcpus,
                guest_image::MAX_VCPUS
            )));
        }
        parts.push(format!("ncpus={}", args.vcpus));
    }
    if !args.cmdline.is_empty() {
        parts.push(args.cmdline.clone());
    }
    let line = parts.join(" ");
    // The loader keeps room for the terminating NUL.
    if line.len() >= CMDLINE_MAX {
        return Err(Failure::usage(format!(
            "the kernel command line is {} bytes; it must be shorter than {CMDLINE_MAX}",
            line.len()
        )));
    }
    Ok(line)
}

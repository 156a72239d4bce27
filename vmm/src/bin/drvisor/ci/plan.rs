//! From a spec and the host probe to a `drvisor run` command line: which checks this host
//! cannot deliver (skipped, with the probe's reason) and the flags for the rest. Pure.

use std::collections::BTreeMap;
use std::path::Path;

use drvisor::probe::{Mechanism, ProbeReport};

use drvisor_ci::spec::{CheckKind, EngineName, OnHit, Spec};

/// The checks this host cannot deliver, by name, with the probe's reason.
pub fn skips(spec: &Spec, probe: &ProbeReport) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for c in &spec.checks {
        let needs: &[Mechanism] = match &c.kind {
            CheckKind::Break(_) => &[Mechanism::HostExecBreakpoint],
            CheckKind::Watch(w) => match (w.engine, w.values.any()) {
                (Some(EngineName::Hw), _) => &[Mechanism::HostWriteWatchpoint],
                (Some(EngineName::Page), _) | (_, true) => &[Mechanism::ReadonlyMemslotTrap],
                // auto: either engine will do.
                _ => {
                    if probe.delivers(Mechanism::HostWriteWatchpoint, 0) {
                        &[]
                    } else {
                        &[Mechanism::ReadonlyMemslotTrap]
                    }
                }
            },
            _ => &[],
        };
        if let Some(why) = needs.iter().find_map(|&m| probe.why_not(m, 0)) {
            out.insert(c.name.clone(), why);
        }
    }
    out
}

/// One `--break` or `--watch` flag and what binds to it. Checks on the same location share one
/// flag (events carry the location as their label, so two flags could not be told apart).
#[derive(Debug, Default, PartialEq, Eq)]
struct Armed {
    watch: bool,
    vcpus: Vec<Option<u32>>,
    stop: bool,
    /// The most stack bytes any check on it needs captured.
    capture: Option<u16>,
    engine: Option<EngineName>,
    needs_values: bool,
    /// `if` (the spec makes every check on one location give the same).
    condition: Option<String>,
}

/// `drvisor run`'s arguments for `spec`, without the skipped checks; events go to `events`.
pub fn run_args(spec: &Spec, skips: &BTreeMap<String, String>, events: &Path) -> Vec<String> {
    let vm = &spec.vm;
    let mut args = vec!["run".to_owned()];
    let mut push = |flag: &str, value: String| {
        args.push(flag.to_owned());
        args.push(value);
    };
    if let Some(k) = &vm.kernel {
        push("--kernel", k.display().to_string());
    }
    if let Some(i) = &vm.initrd {
        push("--initrd", i.display().to_string());
    }
    if let Some(s) = &vm.symbols {
        push("--symbols", s.display().to_string());
    }
    if let Some(s) = &vm.scenario {
        push("--scenario", s.clone());
    }
    push("--vcpus", vm.vcpus.to_string());
    push("--mem", vm.mem.to_string());
    push("--events", events.display().to_string());
    if let Some(f) = &vm.cpu_features {
        // One word: the list begins with `-` or `+`.
        args.push(format!("--cpu-features={f}"));
    }
    if !vm.cmdline.is_empty() {
        // One word, `--cmdline=VALUE`: a command line may begin with `-`.
        args.push(format!("--cmdline={}", vm.cmdline));
    }
    let mut armed: BTreeMap<(bool, &str), Armed> = BTreeMap::new();
    let mut order: Vec<(bool, &str)> = Vec::new();
    for c in spec.checks.iter().filter(|c| !skips.contains_key(&c.name)) {
        let (watch, hits, engine, needs_values) = match &c.kind {
            CheckKind::Break(h) => (false, h, None, false),
            CheckKind::Watch(w) => (true, &w.hits, w.engine, w.values.any()),
            _ => continue,
        };
        let key = (watch, hits.target.as_str());
        if !armed.contains_key(&key) {
            order.push(key);
        }
        let a = armed.entry(key).or_default();
        a.watch = watch;
        a.vcpus.push(hits.vcpu);
        a.stop |= hits.on_hit == OnHit::Stop;
        a.capture = a.capture.max(hits.capture_bytes());
        a.engine = a.engine.or(engine);
        a.needs_values |= needs_values;
        a.condition = a.condition.take().or_else(|| hits.condition.clone());
    }
    for key in order {
        let a = &armed[&key];
        args.push(if a.watch { "--watch" } else { "--break" }.to_owned());
        args.push(key.1.to_owned());
        if a.watch {
            let engine = match (a.engine, a.needs_values) {
                (Some(e), _) => Some(e),
                (None, true) => Some(EngineName::Page),
                (None, false) => None,
            };
            if let Some(e) = engine {
                args.push("--engine".into());
                args.push(e.flag().into());
            }
        }
        // One vCPU only when every check on this location names the same one.
        if let Some(Some(v)) = a.vcpus.first() {
            if a.vcpus.iter().all(|x| *x == Some(*v)) {
                args.push("--vcpu".into());
                args.push(v.to_string());
            }
        }
        if a.stop {
            args.push("--action".into());
            args.push("stop".into());
        }
        if let Some(bytes) = a.capture {
            args.push("--capture".into());
            args.push(bytes.to_string());
        }
        if let Some(c) = &a.condition {
            args.push("--if".into());
            args.push(c.clone());
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use drvisor_ci::spec;

    /// The spec parser refuses a `cmdline` at the loader's own limit, at its line and column.
    #[test]
    fn the_spec_cmdline_limit_is_the_loaders() {
        assert_eq!(spec::CMDLINE_MAX, drvisor::layout::CMDLINE_MAX);
    }

    #[test]
    fn checks_become_flags() {
        let s = spec::parse(
            Path::new("/s/t.toml"),
            r#"
[vm]
scenario = "write"
cmdline = "count=3"
[[check]]
name = "a"
break = "f"
vcpu = 1
[[check]]
name = "b"
break = "f"
on_hit = "stop"
[[check]]
name = "c"
watch = "w:w"
last_value = 3
[[check]]
name = "d"
break = "g"
vcpu = 0
[[check]]
name = "e"
break = "skipped"
"#,
            &|_| true,
        )
        .expect("parses");
        let skips = BTreeMap::from([("e".to_owned(), "no".to_owned())]);
        let args = run_args(&s, &skips, Path::new("/tmp/ev"));
        assert_eq!(
            args.join(" "),
            "run --scenario write --vcpus 1 --mem 64 --events /tmp/ev --cmdline=count=3 \
             --break f --action stop --watch w:w --engine page --break g --vcpu 0"
        );
    }

    /// The most bytes any check on a location asks: `capture`, `stack_contains`'s default,
    /// `on_hit = "capture"`'s.
    #[test]
    fn capture_takes_the_most_any_check_needs() {
        let s = spec::parse(
            Path::new("/s/x.toml"),
            "[[check]]\nname = \"a\"\nbreak = \"f\"\non_hit = \"capture\"\n\
             [[check]]\nname = \"b\"\nbreak = \"f\"\nstack_contains = \"g\"\n\
             [[check]]\nname = \"c\"\nbreak = \"h\"\nstack_contains = \"g\"\ncapture = 64\n\
             [[check]]\nname = \"d\"\nbreak = \"i\"\non_hit = \"capture\"\n",
            &|_| true,
        )
        .expect("parses");
        let args = run_args(&s, &BTreeMap::new(), Path::new("/tmp/ev"));
        let flags = args[args.iter().position(|a| a == "--break").expect("a break")..].join(" ");
        assert_eq!(
            flags,
            "--break f --capture 1024 --break h --capture 64 --break i --capture 128"
        );
    }

    #[test]
    fn if_binds_to_its_break() {
        let s = spec::parse(
            Path::new("/s/x.toml"),
            "[[check]]\nname = \"a\"\nbreak = \"f\"\nif = \"hits % 10 == 0\"\nhits = 10\n\
             [[check]]\nname = \"b\"\nbreak = \"g\"\n",
            &|_| true,
        )
        .expect("parses");
        let args = run_args(&s, &BTreeMap::new(), Path::new("/tmp/ev"));
        assert_eq!(
            args[args.len() - 6..].join(" "),
            "--break f --if hits % 10 == 0 --break g"
        );
    }
}

//! From a spec and what the host delivers to a `drvisor run` command line: which checks this
//! host cannot deliver (skipped, with the host probe's reason) and the flags for the rest. Pure.

use std::collections::BTreeMap;
use std::path::Path;

use crate::spec::{CheckKind, EngineName, OnHit, Spec};

/// What the host delivers, as far as a spec's checks care: for each mechanism a check may
/// need, why this host cannot deliver it (None: it can). drvisor fills it from its host probe
/// (`ProbeReport::why_not` at CPL 0); the default delivers everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostSupport {
    /// Host execution breakpoints (`break`).
    pub exec_breakpoint: Option<String>,
    /// Host write watchpoints in the debug registers (`watch`, `engine = "hw"`).
    pub write_watchpoint: Option<String>,
    /// Write traps through a read-only memory slot (`watch`, `engine = "page"`, and every
    /// watch on values).
    pub readonly_memslot_trap: Option<String>,
}

/// The checks this host cannot deliver, by name, with the probe's reason.
pub fn skips(spec: &Spec, host: &HostSupport) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for c in &spec.checks {
        let why = match &c.kind {
            CheckKind::Break(_) => &host.exec_breakpoint,
            CheckKind::Watch(w) => match (w.engine, w.values.any()) {
                (Some(EngineName::Hw), _) => &host.write_watchpoint,
                (Some(EngineName::Page), _) | (_, true) => &host.readonly_memslot_trap,
                // auto: either engine will do.
                _ => match host.write_watchpoint {
                    None => &None,
                    Some(_) => &host.readonly_memslot_trap,
                },
            },
            _ => &None,
        };
        if let Some(why) = why {
            out.insert(c.name.clone(), why.clone());
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
    if let Some(m) = &vm.cpu_model {
        push("--cpu-model", m.clone());
    }
    if let Some(v) = &vm.cpu_vendor {
        push("--cpu-vendor", v.clone());
    }
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
    use crate::spec;

    fn checks_of_each_kind() -> Spec {
        spec::parse(
            Path::new("/s/x.toml"),
            "[[check]]\nname = \"b\"\nbreak = \"f\"\n\
             [[check]]\nname = \"hw\"\nwatch = \"g\"\nengine = \"hw\"\n\
             [[check]]\nname = \"page\"\nwatch = \"g2\"\nengine = \"page\"\n\
             [[check]]\nname = \"auto\"\nwatch = \"h\"\n\
             [[check]]\nname = \"values\"\nwatch = \"i\"\nlast_value = 1\n\
             [[check]]\nname = \"status\"\nexit_status = 0\n",
            &|_| true,
        )
        .expect("parses")
    }

    #[test]
    fn a_host_that_delivers_everything_skips_nothing() {
        assert!(skips(&checks_of_each_kind(), &HostSupport::default()).is_empty());
    }

    /// Each check is skipped for the mechanism its engine needs, with the probe's words.
    #[test]
    fn each_check_is_skipped_for_what_it_needs() {
        let host = HostSupport {
            exec_breakpoint: Some("no exec".into()),
            write_watchpoint: Some("no hw".into()),
            readonly_memslot_trap: None,
        };
        let got = skips(&checks_of_each_kind(), &host);
        let want = BTreeMap::from([
            ("b".to_owned(), "no exec".to_owned()),
            ("hw".to_owned(), "no hw".to_owned()),
        ]);
        assert_eq!(got, want);
    }

    /// A watch without an engine runs on either: skipped only when neither works, for the
    /// page engine's reason (the one it would have fallen back to).
    #[test]
    fn an_automatic_watch_needs_either_engine() {
        let host = HostSupport {
            exec_breakpoint: None,
            write_watchpoint: None,
            readonly_memslot_trap: Some("no page".into()),
        };
        let got = skips(&checks_of_each_kind(), &host);
        assert_eq!(got.keys().collect::<Vec<_>>(), ["page", "values"]);
        let host = HostSupport {
            write_watchpoint: Some("no hw".into()),
            ..host
        };
        let got = skips(&checks_of_each_kind(), &host);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            ["auto", "hw", "page", "values"]
        );
        assert_eq!(got["auto"], "no page");
    }

    #[test]
    fn checks_become_flags() {
        let s = spec::parse(
            Path::new("/s/t.toml"),
            r#"
[vm]
scenario = "write"
cmdline = "count=3"
cpu_model = "qemu64"
cpu_vendor = "GenuineIntel"
cpu_features = "-pcid"
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
            "run --scenario write --vcpus 1 --mem 64 --events /tmp/ev --cpu-model qemu64 \
             --cpu-vendor GenuineIntel --cpu-features=-pcid --cmdline=count=3 \
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

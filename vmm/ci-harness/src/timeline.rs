//! When each check's hits happened: per check that counts hits (a `break` or `watch`), its
//! hits' vCPUs and times since the run's start, for the HTML report's timeline. Pure.

use std::collections::BTreeMap;

use crate::judge::{self, Observation};
use crate::spec::Spec;

/// One hit of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedHit {
    pub vcpu: u32,
    /// Nanoseconds since the run's start; None where its event line carried no time.
    pub ns: Option<u64>,
}

/// The hits of one check that counts hits, in the run's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckHits {
    pub check: String,
    pub hits: Vec<TimedHit>,
}

/// Every check of `spec` that counts hits and was not skipped (`skips`), with the hits it
/// counts in `obs`.
pub fn of(spec: &Spec, obs: &Observation, skips: &BTreeMap<String, String>) -> Vec<CheckHits> {
    spec.checks
        .iter()
        .filter(|c| !skips.contains_key(&c.name))
        .filter_map(|c| {
            let h = c.kind.hits()?;
            let hits = obs
                .hits
                .iter()
                .enumerate()
                .filter(|(_, e)| judge::counts(h, e))
                .map(|(i, e)| TimedHit {
                    vcpu: e.vcpu,
                    ns: obs.hit_ns.get(i).copied().flatten(),
                })
                .collect();
            Some(CheckHits {
                check: c.name.clone(),
                hits,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use drvisor_api::HitEvent;

    use super::*;
    use crate::judge::RunEnd;
    use crate::spec;

    fn hit(label: &str, vcpu: u32) -> HitEvent {
        serde_json::from_value(serde_json::json!({
            "event": "hit", "id": 1, "label": label, "vcpu": vcpu, "rip": 0x1000, "addr": 0x1000,
            "kind": "exec", "engine": "hw", "action": "continue", "count": 1,
            "regs": {"rax":0,"rbx":0,"rcx":0,"rdx":0,"rsi":0,"rdi":0,"rsp":0,"rbp":0,"r8":0,"r9":0,
                     "r10":0,"r11":0,"r12":0,"r13":0,"r14":0,"r15":0,"rip":0x1000,"rflags":2}
        }))
        .expect("a hit event")
    }

    #[test]
    fn each_hit_check_gets_its_hits_with_their_times() {
        let spec = spec::parse(
            Path::new("/s/t.toml"),
            "[[check]]\nname = \"f any\"\nbreak = \"f\"\n\
             [[check]]\nname = \"f on 1\"\nbreak = \"f\"\nvcpu = 1\n\
             [[check]]\nname = \"g\"\nbreak = \"g\"\n\
             [[check]]\nname = \"skipped\"\nbreak = \"f\"\n\
             [[check]]\nname = \"console\"\nconsole_match = \"x\"\n",
            &|_| true,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let obs = Observation {
            console: String::new(),
            hits: vec![hit("f", 0), hit("g", 0), hit("f", 1)],
            // The third line carried no time.
            hit_ns: vec![Some(10), Some(20)],
            end: RunEnd::Guest(0),
            seconds: 1.0,
        };
        let skips = BTreeMap::from([("skipped".to_string(), "no hw".to_string())]);
        let t = |vcpu, ns| TimedHit { vcpu, ns };
        assert_eq!(
            of(&spec, &obs, &skips),
            vec![
                CheckHits {
                    check: "f any".into(),
                    hits: vec![t(0, Some(10)), t(1, None)],
                },
                CheckHits {
                    check: "f on 1".into(),
                    hits: vec![t(1, None)],
                },
                CheckHits {
                    check: "g".into(),
                    hits: vec![t(0, Some(20))],
                },
            ]
        );
    }
}

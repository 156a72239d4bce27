//! Every client passes one door to the engine: clients that add and remove breakpoints at once,
//! at the very address a kept breakpoint holds, never change its count, and each breakpoint's
//! `added` and `removed` events bracket its hits. Trials are in the `live_changes` suite: the
//! exactly-once promise.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use drvisor_api::client::Client;
use drvisor_api::rest::NewBreakpoint;
use drvisor_api::HitAction;

use crate::common::{ensure, read_events, Failed, Trial};
use crate::rest_api::Served;

pub fn trials() -> Vec<Trial> {
    let mut t = vec![
        Trial::test(
            "live_changes::one_id_deleted_twice_at_once_is_removed_once",
            deleted_twice_at_once,
        ),
        Trial::test(
            "live_changes::a_client_gone_mid_add_leaves_a_whole_breakpoint_or_none",
            client_gone_mid_add,
        ),
    ];
    for vcpus in [1, 2] {
        t.push(Trial::test(
            format!("live_changes::churn_at_a_kept_address_changes_nothing_{vcpus}_vcpus"),
            move || churn_at_a_kept_address(vcpus),
        ));
    }
    t
}

fn exec_at(location: &str) -> NewBreakpoint {
    NewBreakpoint {
        location: location.into(),
        vcpu: None,
        action: HitAction::Continue,
        capture: None,
        condition: None,
    }
}

/// How long the churning may go on before the guest must have finished.
const CHURN_LIMIT: Duration = Duration::from_secs(120);

/// One breakpoint kept on `drv_target_0` while two clients add and remove breakpoints on the
/// same address as fast as they can: the kept one reports every call the guest counts, once;
/// every churned one has its `added` before its first hit and its `removed` after its last.
fn churn_at_a_kept_address(vcpus: usize) -> Result<(), Failed> {
    const CHURNERS: usize = 2;
    let count = 12_000 / vcpus;
    let (n, cmdline) = (vcpus.to_string(), format!("count={count}"));
    let mut served = Served::start(&[
        "--paused",
        "--scenario",
        "smp",
        "--cmdline",
        &cmdline,
        "--vcpus",
        &n,
        "--break",
        "drv_target_0",
        "--quiet",
    ])?;
    let stop = Arc::new(AtomicBool::new(false));
    let churns = Arc::new(AtomicU64::new(0));
    let churners: Vec<_> = (0..CHURNERS)
        .map(|_| {
            let (sock, stop, churns) = (served.sock.clone(), stop.clone(), churns.clone());
            std::thread::spawn(move || -> Result<(), String> {
                let c = Client::unix(&sock).map_err(|e| e.to_string())?;
                while !stop.load(Ordering::Relaxed) {
                    // The VM ends under the churn: then any call may fail, and that is the end.
                    let Ok(bp) = c.add_breakpoint(&exec_at("drv_target_0")) else {
                        return Ok(());
                    };
                    match c.remove_breakpoint(bp.id) {
                        Ok(()) => churns.fetch_add(1, Ordering::Relaxed),
                        Err(_) => return Ok(()),
                    };
                }
                Ok(())
            })
        })
        .collect();
    let start = Instant::now();
    served.client.resume()?;
    while !stop.load(Ordering::Relaxed) {
        if served.client.vm().is_err() {
            break;
        }
        if start.elapsed() > CHURN_LIMIT {
            stop.store(true, Ordering::Relaxed);
            let e = format!(
                "the guest did not finish in {CHURN_LIMIT:?} under the churn ({} churns)",
                churns.load(Ordering::Relaxed)
            );
            return Err(served.explain(e.into()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for c in churners {
        c.join().map_err(|_| "a churner panicked")??;
    }
    let (code, out, err) = served.finish()?;
    ensure(code == 0, || {
        format!("exit {code}: the guest's own counts disagree\n{out}{err}")
    })?;
    let churned = churns.load(Ordering::Relaxed);
    ensure(churned >= 20, || {
        format!("only {churned} add/remove pairs while the guest ran: not a churn")
    })?;
    let events = read_events(&served.events)?;
    check_brackets(&events)?;
    let kept = events
        .iter()
        .filter(|e| e["event"] == "hit" && e["id"] == 1)
        .count() as u64;
    let calls = (vcpus * count) as u64;
    ensure(kept == calls, || {
        format!("the kept breakpoint reported {kept} hits for {calls} calls ({churned} churns)")
    })?;
    println!("{churned} add/remove pairs at the kept address; kept: {kept} hits of {calls} calls");
    Ok(())
}

/// Every breakpoint's hits come after its `added` and before its `removed`, by `seq`, and no
/// event is reported lost.
pub(crate) fn check_brackets(events: &[serde_json::Value]) -> Result<(), Failed> {
    use std::collections::BTreeMap;
    let mut added = BTreeMap::new();
    let mut removed = BTreeMap::new();
    for e in events {
        let seq = e["seq"].as_u64().unwrap_or(0);
        match (e["event"].as_str(), e["change"].as_str()) {
            (Some("lost"), _) => return Err(format!("the events file lost events: {e}").into()),
            (Some("plan"), Some("added")) => {
                added.insert(e["breakpoint"]["id"].as_u64().unwrap_or(0), seq);
            }
            (Some("plan"), Some("removed")) => {
                removed.insert(e["breakpoint"]["id"].as_u64().unwrap_or(0), seq);
            }
            _ => {}
        }
    }
    for e in events.iter().filter(|e| e["event"] == "hit") {
        let (id, seq) = (
            e["id"].as_u64().unwrap_or(0),
            e["seq"].as_u64().unwrap_or(0),
        );
        let after_added = added.get(&id).is_some_and(|&a| a < seq);
        let before_removed = removed.get(&id).is_none_or(|&r| seq < r);
        ensure(after_added && before_removed, || {
            format!(
                "hit seq {seq} of #{id} ({} engine, vCPU {}) outside its plan events (added \
                 {:?}, removed {:?})",
                e["engine"],
                e["vcpu"],
                added.get(&id),
                removed.get(&id)
            )
        })?;
    }
    Ok(())
}

/// Two clients delete the same id at the same moment: one is answered 204, the other 404, and
/// the breakpoint is gone. Repeated, since the race is the point.
fn deleted_twice_at_once() -> Result<(), Failed> {
    let mut served = Served::start(&["--paused", "--scenario", "exec"])?;
    let result = (|| -> Result<(), Failed> {
        for round in 0..20 {
            let bp = served.client.add_breakpoint(&exec_at("drv_target_1"))?;
            let barrier = Arc::new(Barrier::new(2));
            let deleters: Vec<_> = (0..2)
                .map(|_| {
                    let (sock, barrier) = (served.sock.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        let c = Client::unix(&sock).map_err(|e| e.to_string())?;
                        barrier.wait();
                        Ok::<_, String>(c.remove_breakpoint(bp.id).map_err(|e| e.status()))
                    })
                })
                .collect();
            let mut answers = Vec::new();
            for d in deleters {
                answers.push(d.join().map_err(|_| "a deleter panicked")??);
            }
            answers.sort();
            ensure(answers == [Ok(()), Err(Some(404))], || {
                format!(
                    "round {round}: two DELETEs of #{} answered {answers:?}",
                    bp.id
                )
            })?;
            ensure(served.client.breakpoints()?.is_empty(), || {
                format!("round {round}: #{} is still listed", bp.id)
            })?;
        }
        served.client.stop()?;
        Ok(())
    })();
    result.map_err(|e| served.explain(e))
}

/// Clients that send `POST /breakpoints` and hang up at once, at moments from before the
/// answer to well after: each breakpoint is armed whole or not at all. One that the VM lists is
/// armed in a slot, has its `added` event, and (removed before the next client comes, so the
/// four slots do not run out) its `removed`; one that is not listed left no event. The last one
/// is kept and counts every call of its function, once.
fn client_gone_mid_add() -> Result<(), Failed> {
    use std::io::Write;
    const ROUNDS: u64 = 20;
    const CALLS: u64 = 300;
    let cmdline = format!("count={CALLS}");
    let mut served = Served::start(&[
        "--paused",
        "--scenario",
        "smp",
        "--cmdline",
        &cmdline,
        "--vcpus",
        "1",
        "--quiet",
    ])?;
    let result = (|| -> Result<(), Failed> {
        let body = r#"{"location":"drv_target_0","action":"continue"}"#;
        let request = format!(
            "POST /breakpoints HTTP/1.1\r\nhost: drvisor\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        );
        let (mut armed, mut kept) = (Vec::new(), None);
        for round in 0..ROUNDS {
            let mut s =
                std::os::unix::net::UnixStream::connect(&served.sock).map_err(|e| e.to_string())?;
            s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
            // Gone at once, or after 0.1 to 1.9 ms: before, during and after the arming.
            if round % 2 == 1 {
                std::thread::sleep(Duration::from_micros(100 * round));
            }
            drop(s);
            // The arming of a request whose client left still runs to its end: wait until the
            // list stops changing.
            let mut listed = served.client.breakpoints()?;
            loop {
                std::thread::sleep(Duration::from_millis(200));
                let now = served.client.breakpoints()?;
                if now == listed {
                    break;
                }
                listed = now;
            }
            ensure(listed.len() <= 1, || {
                format!("round {round}: one abandoned add, and the VM lists {listed:?}")
            })?;
            if let Some(bp) = listed.first() {
                let whole = bp.state.starts_with("armed")
                    && !bp.vcpus.is_empty()
                    && bp
                        .vcpus
                        .iter()
                        .all(|p| p.state == "armed" && p.slot.is_some());
                ensure(whole, || {
                    format!("round {round}: #{} is listed half-armed: {bp:?}", bp.id)
                })?;
                armed.push(u64::from(bp.id));
                match round + 1 < ROUNDS {
                    true => served.client.remove_breakpoint(bp.id)?,
                    false => kept = Some(u64::from(bp.id)),
                }
            }
        }
        served.client.resume()?;
        let (code, out, err) = served.finish()?;
        ensure(code == 0, || format!("exit {code}\n{out}{err}"))?;
        let events = read_events(&served.events)?;
        check_brackets(&events)?;
        let changed = |change: &str| -> Vec<u64> {
            events
                .iter()
                .filter(|e| e["event"] == "plan" && e["change"] == change)
                .filter_map(|e| e["breakpoint"]["id"].as_u64())
                .collect()
        };
        ensure(changed("added") == armed, || {
            format!(
                "listed in turn {armed:?}, but the events file has `added` for {:?}",
                changed("added")
            )
        })?;
        let removed: Vec<u64> = armed
            .iter()
            .copied()
            .filter(|&id| Some(id) != kept)
            .collect();
        ensure(changed("removed") == removed, || {
            format!(
                "removed in turn {removed:?}, but the events file has `removed` for {:?}",
                changed("removed")
            )
        })?;
        if let Some(id) = kept {
            let hits = events
                .iter()
                .filter(|e| e["event"] == "hit" && e["id"] == id)
                .count() as u64;
            ensure(hits == CALLS, || {
                format!("kept #{id}: {hits} hits for the guest's {CALLS} calls")
            })?;
        }
        ensure(!armed.is_empty(), || {
            format!("none of {ROUNDS} complete requests was served before its client left")
        })?;
        println!(
            "{} of {ROUNDS} abandoned adds were armed, each whole",
            armed.len()
        );
        Ok(())
    })();
    result.map_err(|e| served.explain(e))
}

//! What a `drvisor run` child's exit code and messages mean for the judge. Pure.

use drvisor_api::exit_code;

use crate::judge::RunEnd;

/// Where drvisor's closing line after a stop by signal put the vCPUs: `vCPU 0 at rip=0x...
/// (symbol+0x...), vCPU 1 at ...`, or None without such a line.
pub fn last_seen(messages: &str) -> Option<String> {
    messages.lines().rev().find_map(|l| {
        let (_, rest) = l.split_once("; the vCPUs were stopped (")?;
        let at = rest.strip_suffix(") and the events written")?;
        Some(at.to_owned())
    })
}

/// What `drvisor run`'s exit code and messages mean. drvisor's own codes always come with a
/// `drvisor:` line; without one, the code is the guest's status (docs/cli.md, "Exit codes").
pub fn end_of(code: i32, messages: &str) -> RunEnd {
    let last = messages
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("drvisor: "))
        .map(str::to_owned);
    let Ok(byte) = u8::try_from(code) else {
        return RunEnd::Infrastructure(format!(
            "drvisor died (status {code}): {}",
            last.unwrap_or_default()
        ));
    };
    match (byte, last) {
        (b, None) if b <= exit_code::GUEST_MAX => RunEnd::Guest(code),
        (exit_code::USAGE, Some(m)) => RunEnd::Refused(m),
        (exit_code::HOST_STOP, Some(m)) => RunEnd::Stopped(m),
        (
            exit_code::VMM_ERROR
            | exit_code::QEMU_VMM_ERROR
            | exit_code::FAIL_ENTRY
            | exit_code::EVENTS_UNWRITABLE,
            m,
        ) => RunEnd::Infrastructure(m.unwrap_or_else(|| format!("exit code {code}"))),
        (b, Some(m)) if b <= exit_code::GUEST_MAX => {
            // A guest status with a warning on stderr (a pending breakpoint, say).
            let _ = m;
            RunEnd::Guest(code)
        }
        (_, m) => RunEnd::Aborted(code, m.unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_the_closing_line_put_the_vcpus() {
        let messages = "drvisor: SIGTERM: stopping the run (send it again to exit at once)\n\
            drvisor: summary: #1 f (exec): hw slot 3, armed, 0 hits\n\
            drvisor: stopped by SIGTERM; the vCPUs were stopped (vCPU 0 at rip=0x1004 (spin+0x4), \
            vCPU 1 at rip=0x2000) and the events written\n";
        assert_eq!(
            last_seen(messages).as_deref(),
            Some("vCPU 0 at rip=0x1004 (spin+0x4), vCPU 1 at rip=0x2000")
        );
        assert_eq!(
            last_seen(
                "drvisor: stopped by SIGTERM; the vCPUs were stopped and the events written\n"
            ),
            None
        );
        assert_eq!(last_seen(""), None);
    }

    #[test]
    fn exit_codes_by_table() {
        let table = [
            (0, "", RunEnd::Guest(0)),
            (1, "", RunEnd::Guest(1)),
            (2, "", RunEnd::Guest(2)),
            (
                0,
                "drvisor: warning: host breakpoint #5 is pending\n",
                RunEnd::Guest(0),
            ),
            (
                2,
                "drvisor: unknown symbol 'x'\n",
                RunEnd::Refused("unknown symbol 'x'".into()),
            ),
            (
                74,
                "drvisor: host breakpoint 1 (f) stopped the run\n",
                RunEnd::Stopped("host breakpoint 1 (f) stopped the run".into()),
            ),
            (
                70,
                "drvisor: triple fault\n",
                RunEnd::Aborted(70, "triple fault".into()),
            ),
            (
                75,
                "drvisor: KVM_RUN failed\n",
                RunEnd::Infrastructure("KVM_RUN failed".into()),
            ),
            (76, "", RunEnd::Infrastructure("exit code 76".into())),
            (
                -1,
                "drvisor: killed\n",
                RunEnd::Infrastructure("drvisor died (status -1): killed".into()),
            ),
        ];
        for (code, messages, want) in table {
            assert_eq!(end_of(code, messages), want, "{code} {messages:?}");
        }
    }
}

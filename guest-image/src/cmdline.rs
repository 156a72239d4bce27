//! `hvm_start_info` access and command-line parsing.
//!
//! The command line is NUL-terminated, space-separated `key=value` words:
//! `scenario=NAME` (default `hello`), `count=N` (default 100; 1 for `ranges`), `ncpus=N`
//! (default 1), `slots=LIST` (guest-dr; default `0,1,2,3`; element `S` or `S:T`: debug slot S
//! watches `drv_target_T`, T defaults to S), `announce=0|1` (guest-dr and dr-migrate; default 1: print DR7
//! after arming it, so an exit separates the arming from the first call), `polls=N` (echo: LSR
//! polls before giving up, default 500000), `gbp=entry|inc` (kfunc: where the guest's
//! breakpoints go in each function, default `entry`), `rounds=N` (dr-migrate, default 8), `delay=N` (dr-migrate, default 0),
//! `watch=exec|write` (dr-migrate, default exec); `announce=` also applies to dr-migrate. Unknown keys are ignored.
//!
//! Every CPU parses the (read-only) command line itself, so no CPU waits for another at boot.
//! Everything is kept as byte slices: `core::str::from_utf8` is prebuilt with SSE.

use crate::boot::MAX_CPUS;

/// `struct hvm_start_info` from the Xen PVH ABI (only the fields the guest reads).
#[repr(C)]
#[allow(dead_code)]
struct StartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

const START_INFO_MAGIC: u32 = 0x336e_c578;
/// Longest command line read; anything after it is ignored.
const CMDLINE_MAX: usize = 4096;
/// Default of `polls=`: LSR polls the echo scenario makes before giving up.
pub const DEFAULT_POLLS: u64 = 500_000;

/// Something wrong with the command line, reported by CPU 0 with exit status 2.
#[derive(Clone, Copy)]
pub enum Error {
    /// `start_info` magic did not match (cmdline treated as empty).
    BadMagic(u32),
    /// `key=value` with a value that does not parse; carries the whole word.
    BadValue(&'static [u8]),
}

/// The parsed command line.
pub struct Config {
    /// The raw command line (without the NUL).
    pub raw: &'static [u8],
    pub scenario: &'static [u8],
    pub count: u64,
    /// Whether `count=` appeared (scenarios with their own default check it).
    pub count_given: bool,
    pub ncpus: u32,
    /// `slots[S] = Some(T)`: guest debug slot S watches `drv_target_T`.
    pub slots: [Option<u8>; 4],
    /// guest-dr: whether the DR7 line is printed after arming (an exit before the first call).
    pub announce: bool,
    /// ranges: repeat until the host signals (`until=signal`).
    pub until_signal: bool,
    /// echo: how many times to poll COM1's LSR for input before giving up.
    pub polls: u64,
    /// dr-migrate: how many rounds the migrating thread runs.
    pub rounds: u64,
    /// dr-migrate: busy iterations after each touch.
    pub delay: u64,
    /// dr-migrate: the guest's breakpoint is a write watch (`watch=write`), not an exec one.
    pub watch_write: bool,
    /// status: the status byte to exit with.
    pub status: u8,
    /// irq-line: the interrupt line (I/O APIC pin) to raise, 0-23 (`line=N`, default 14).
    pub line: u32,
    /// irq-line: the pin is level-triggered (`trigger=level`) instead of edge-triggered
    /// (`trigger=edge`, the default).
    pub level: bool,
    /// kfunc: the guest's breakpoints go on each function's `lock inc` (`gbp=inc`) instead of
    /// its entry (`gbp=entry`, the default).
    pub gbp_inc: bool,
    /// s3: sleep with no wake event enabled (`wake=none`) instead of the RTC alarm
    /// (`wake=rtc`, the default).
    pub wake_none: bool,
    /// s3: resume through `X_Firmware_Waking_Vector` in 32-bit code (`vector=x`) instead of
    /// the real-mode `Firmware_Waking_Vector` (`vector=real`, the default).
    pub s3_x_vector: bool,
    pub error: Option<Error>,
}

/// Reads the command line through `start_info_paddr` and parses it.
pub fn parse(start_info_paddr: u32) -> Config {
    let mut cfg = Config {
        raw: b"",
        scenario: b"hello",
        count: 100,
        count_given: false,
        ncpus: 1,
        slots: [Some(0), Some(1), Some(2), Some(3)],
        announce: true,
        until_signal: false,
        polls: DEFAULT_POLLS,
        rounds: 8,
        watch_write: false,
        delay: 0,
        status: 0,
        line: 14,
        level: false,
        gbp_inc: false,
        wake_none: false,
        s3_x_vector: false,
        error: None,
    };
    if start_info_paddr == 0 {
        cfg.error = Some(Error::BadMagic(0));
        return cfg;
    }
    // SAFETY: the VMM passes the physical address of a start_info struct in EBX; memory below
    // 4 GiB is identity-mapped and nothing writes the struct after boot.
    let si = unsafe { &*(start_info_paddr as usize as *const StartInfo) };
    if si.magic != START_INFO_MAGIC {
        cfg.error = Some(Error::BadMagic(si.magic));
        return cfg;
    }
    cfg.raw = read_cstr(si.cmdline_paddr);

    for word in cfg.raw.split(|&c| c == b' ' || c == b'\t' || c == b'\n') {
        let Some(eq) = word.iter().position(|&c| c == b'=') else {
            continue;
        };
        let (key, value) = (&word[..eq], &word[eq + 1..]);
        let ok = match key {
            b"scenario" => {
                cfg.scenario = value;
                true
            }
            b"count" => parse_u64(value)
                .map(|n| {
                    cfg.count = n;
                    cfg.count_given = true;
                })
                .is_some(),
            b"ncpus" => match parse_u64(value) {
                Some(n) if n >= 1 && n <= MAX_CPUS as u64 => {
                    cfg.ncpus = n as u32;
                    true
                }
                _ => false,
            },
            b"slots" => parse_slots(value).map(|s| cfg.slots = s).is_some(),
            b"polls" => parse_u64(value).map(|n| cfg.polls = n).is_some(),
            b"until" => {
                cfg.until_signal = value == b"signal";
                cfg.until_signal
            }
            b"announce" => match value {
                b"0" | b"1" => {
                    cfg.announce = value == b"1";
                    true
                }
                _ => false,
            },
            b"status" => match parse_u64(value) {
                Some(n) if n <= u64::from(u8::MAX) => {
                    cfg.status = n as u8;
                    true
                }
                _ => false,
            },
            b"line" => match parse_u64(value) {
                Some(n) if n <= 23 => {
                    cfg.line = n as u32;
                    true
                }
                _ => false,
            },
            b"trigger" => match value {
                b"edge" | b"level" => {
                    cfg.level = value == b"level";
                    true
                }
                _ => false,
            },
            b"delay" => parse_u64(value).map(|n| cfg.delay = n).is_some(),
            b"rounds" => parse_u64(value).map(|n| cfg.rounds = n).is_some(),
            b"watch" => match value {
                b"exec" | b"write" => {
                    cfg.watch_write = value == b"write";
                    true
                }
                _ => false,
            },
            b"wake" => match value {
                b"rtc" | b"none" => {
                    cfg.wake_none = value == b"none";
                    true
                }
                _ => false,
            },
            b"vector" => match value {
                b"real" | b"x" => {
                    cfg.s3_x_vector = value == b"x";
                    true
                }
                _ => false,
            },
            b"gbp" => match value {
                b"entry" | b"inc" => {
                    cfg.gbp_inc = value == b"inc";
                    true
                }
                _ => false,
            },
            _ => true,
        };
        if !ok && cfg.error.is_none() {
            cfg.error = Some(Error::BadValue(word));
        }
    }
    cfg
}

/// The NUL-terminated string at `paddr` (empty if `paddr` is 0), at most `CMDLINE_MAX` bytes.
fn read_cstr(paddr: u64) -> &'static [u8] {
    if paddr == 0 || paddr >= 1 << 32 {
        return b"";
    }
    let p = paddr as usize as *const u8;
    let mut len = 0;
    // SAFETY: identity-mapped guest memory provided by the VMM; reads stop at the NUL or
    // CMDLINE_MAX, and the bytes are never written afterwards.
    unsafe {
        while len < CMDLINE_MAX && p.add(len).read_volatile() != 0 {
            len += 1;
        }
        core::slice::from_raw_parts(p, len)
    }
}

/// Decimal `u64`, no sign, no overflow, at least one digit.
fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(n)
}

/// `S[:T],S[:T],...` with S and T in 0..=3. An empty list enables no slot.
fn parse_slots(s: &[u8]) -> Option<[Option<u8>; 4]> {
    let mut slots = [None; 4];
    if s.is_empty() {
        return Some(slots);
    }
    for elem in s.split(|&c| c == b',') {
        let (slot, target) = match elem.iter().position(|&c| c == b':') {
            Some(colon) => (parse_u64(&elem[..colon])?, parse_u64(&elem[colon + 1..])?),
            None => {
                let s = parse_u64(elem)?;
                (s, s)
            }
        };
        if slot > 3 || target > 3 {
            return None;
        }
        slots[slot as usize] = Some(target as u8);
    }
    Some(slots)
}

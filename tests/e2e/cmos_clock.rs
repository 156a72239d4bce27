//! The CMOS clock at ports 0x70/0x71, read by a tiny 32-bit kernel written for this test: it
//! prints registers B, D and A, then seconds, minutes, hours, day of week, day, month, year and
//! century, as two hex digits each, and exits with 0. The time must be the host's (UTC, BCD,
//! 24-hour, as a PC BIOS leaves it), read between the test's start and end.

use std::process::Command;

use drvisor::boot::elf::ElfClass;
use drvisor::boot::test_elf::{build_with, multiboot_header, LoadSegment};

use crate::common::{drvisor, ensure, run_command, temp_path, Failed, Trial};

const BASE: u64 = 0x10_0000;
const TABLE: u32 = BASE as u32 + 0x40;
const LIST: u32 = BASE as u32 + 0x50;
/// The registers printed, in order, ended by 0xff.
const REGISTERS: [u8; 12] = [
    0x0b, 0x0d, 0x0a, 0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32, 0xff,
];

fn kernel() -> Vec<u8> {
    let t = TABLE.to_le_bytes();
    let l = LIST.to_le_bytes();
    let mut code = vec![
        0xbb, t[0], t[1], t[2], t[3], //   mov ebx, TABLE
        0xbe, l[0], l[1], l[2], l[3], //   mov esi, LIST
        0xac, //                           1: lodsb
        0x3c, 0xff, //                     cmp al, 0xff
        0x74, 0x1a, //                     je 2f
        0xe6, 0x70, //                     out 0x70, al
        0xe4, 0x71, //                     in al, 0x71
        0x88, 0xc4, //                     mov ah, al
        0xc0, 0xe8, 0x04, //               shr al, 4
        0xd7, //                           xlatb
        0x66, 0xba, 0xf8, 0x03, //         mov dx, 0x3f8
        0xee, //                           out dx, al
        0x88, 0xe0, //                     mov al, ah
        0x24, 0x0f, //                     and al, 0x0f
        0xd7, //                           xlatb
        0xee, //                           out dx, al
        0xb0, 0x20, //                     mov al, ' '
        0xee, //                           out dx, al
        0xeb, 0xe1, //                     jmp 1b
        0xb0, 0x0a, //                     2: mov al, '\n'
        0xee, //                           out dx, al
        0x31, 0xc0, //                     xor eax, eax
        0xe6, 0xf4, //                     out 0xf4, al
        0xf4, //                           hlt
    ];
    code.resize(0x40, 0xf4);
    code.extend_from_slice(b"0123456789abcdef");
    code.extend_from_slice(&REGISTERS);
    build_with(
        ElfClass::Elf32,
        BASE,
        &[LoadSegment {
            paddr: BASE,
            bytes: &code,
            memsz: code.len() as u64,
        }],
        None,
        &multiboot_header(0, &[]),
    )
}

fn bcd(v: u8) -> i64 {
    i64::from(v >> 4) * 10 + i64::from(v & 0xf)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn reads_the_host_time() -> Result<(), Failed> {
    let path = temp_path("cmos-kernel");
    std::fs::write(&path, kernel())?;
    let before = unix_now();
    let run = drvisor(&["run", "--kernel", path.to_str().unwrap_or_default()]);
    let after = unix_now();
    let _ = std::fs::remove_file(&path);
    run.expect_code(0)?;
    let line = run
        .stdout
        .lines()
        .find(|l| l.split_whitespace().count() == REGISTERS.len() - 1)
        .ok_or_else(|| format!("no register line\n{run}"))?;
    let r: Vec<u8> = line
        .split_whitespace()
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("`{line}`: {e}"))?;
    ensure(r[0] == 0x02, || {
        format!("register B {:#x}: 24-hour BCD", r[0])
    })?;
    ensure(r[1] == 0x80, || {
        format!("register D {:#x}: battery valid", r[1])
    })?;
    ensure(r[2] & 0x7f == 0x26, || format!("register A {:#x}", r[2]))?;
    let (sec, min, hour, dow, day, month, year, century) =
        (r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10]);
    let stamp = format!(
        "{}{:02}-{:02}-{:02} {:02}:{:02}:{:02}",
        bcd(century),
        bcd(year),
        bcd(month),
        bcd(day),
        bcd(hour),
        bcd(min),
        bcd(sec)
    );
    // `date` reads the calendar independently of drvisor's conversion.
    let date = run_command(Command::new("date").args(["-u", "-d", &stamp, "+%s %u"]));
    date.expect_code(0)?;
    let mut fields = date.stdout.split_whitespace();
    let secs: i64 = fields
        .next()
        .unwrap_or("")
        .parse()
        .map_err(|_| date.stdout.clone())?;
    let iso_weekday: u8 = fields
        .next()
        .unwrap_or("")
        .parse()
        .map_err(|_| date.stdout.clone())?;
    ensure(before - 1 <= secs && secs <= after + 1, || {
        format!("the guest read {stamp} ({secs}), the host was at {before}..{after}")
    })?;
    // CMOS: 1 Sunday .. 7 Saturday; ISO: 1 Monday .. 7 Sunday.
    ensure(bcd(dow) == i64::from(iso_weekday % 7 + 1), || {
        format!("day of week {dow} on {stamp}")
    })
}

pub fn trials() -> Vec<Trial> {
    vec![Trial::test(
        "cmos_clock::reads_the_host_time",
        reads_the_host_time,
    )]
}

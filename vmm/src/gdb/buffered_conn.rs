//! gdb's connection, buffered both ways.
//!
//! The gdbstub crate writes a reply one byte at a time and reads a packet one byte at a time;
//! on a bare socket that is a system call per byte (a `g` reply alone is over a thousand), which
//! made the socket, not the VM, the cost of a gdb stop. Here a reply is gathered and sent in one
//! write at its flush, and reads take what the socket has, up to a buffer, at once.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;

use gdbstub::conn::{Connection, ConnectionExt};

/// The most bytes read from the socket at once.
const READ_CHUNK: usize = 4096;

/// A stream socket (Unix or TCP) with a reply buffer and a read buffer.
pub struct BufferedConn<S> {
    stream: S,
    out: Vec<u8>,
    input: Vec<u8>,
    next: usize,
    /// Checked bytes for gdbstub, and the packet being gathered from the socket.
    screen: Screen,
}

impl<S: Read + Write + AsRawFd> BufferedConn<S> {
    /// Wraps `stream`, which must be in blocking mode.
    pub fn new(stream: S) -> Self {
        BufferedConn {
            stream,
            out: Vec::with_capacity(READ_CHUNK),
            input: Vec::with_capacity(READ_CHUNK),
            next: 0,
            screen: Screen::default(),
        }
    }

    /// The next byte for gdbstub, if one is screened. The screen's own answers come in the
    /// order of the packets they answer: one is sent when gdbstub has taken every byte before
    /// its packet (and so answered those packets: it flushes each reply before it reads on).
    fn buffered(&mut self) -> std::io::Result<Option<u8>> {
        loop {
            match self.screen.ready.front() {
                Some(Item::Byte(b)) => return Ok(Some(*b)),
                None => return Ok(None),
                Some(Item::Answer(_)) => {
                    if let Some(Item::Answer(answer)) = self.screen.ready.pop_front() {
                        self.flush()?;
                        self.stream.write_all(&answer)?;
                        self.stream.flush()?;
                    }
                }
            }
        }
    }

    /// Passes what the socket has (waiting for it if `wait`) through the screen.
    /// `Ok(false)` if nothing was there.
    fn pump(&mut self, wait: bool) -> std::io::Result<bool> {
        if !self.fill(wait)? {
            return Ok(false);
        }
        for &b in &self.input[self.next..] {
            self.screen.take(b);
        }
        self.next = self.input.len();
        Ok(true)
    }

    /// Fills the read buffer from the socket: waiting for at least one byte if `wait`, else
    /// taking only what is there now. `Ok(false)` if nothing was there.
    fn fill(&mut self, wait: bool) -> std::io::Result<bool> {
        self.input.resize(READ_CHUNK, 0);
        self.next = 0;
        let got = if wait {
            self.stream.read(&mut self.input)
        } else {
            // SAFETY: recv(2) writes at most `input.len()` bytes into `input`, a live buffer
            // of that length, from this connection's own open socket.
            let n = unsafe {
                libc::recv(
                    self.stream.as_raw_fd(),
                    self.input.as_mut_ptr().cast(),
                    self.input.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            match n {
                -1 => Err(std::io::Error::last_os_error()),
                n => Ok(n as usize),
            }
        };
        match got {
            Ok(0) => {
                self.input.clear();
                Err(ErrorKind::UnexpectedEof.into())
            }
            Ok(n) => {
                self.input.truncate(n);
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && !wait => {
                self.input.clear();
                Ok(false)
            }
            Err(e) => {
                self.input.clear();
                Err(e)
            }
        }
    }
}

impl<S: Read + Write + AsRawFd> Connection for BufferedConn<S> {
    type Error = std::io::Error;

    fn write(&mut self, byte: u8) -> Result<(), Self::Error> {
        self.out.push(byte);
        // An acknowledgement is written alone, before its command is handled, and a `vCont`
        // is answered only at the next stop, which may be long after: gdb waits for the `+`
        // meanwhile, so it goes out at once.
        if self.out == [b'+'] {
            return self.flush();
        }
        Ok(())
    }

    fn write_all(&mut self, buf: &[u8]) -> Result<(), Self::Error> {
        self.out.extend_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        let sent = self.stream.write_all(&self.out);
        self.out.clear();
        sent?;
        self.stream.flush()
    }
}

impl<S: Read + Write + AsRawFd> ConnectionExt for BufferedConn<S> {
    fn read(&mut self) -> Result<u8, Self::Error> {
        loop {
            if let Some(b) = self.buffered()? {
                self.screen.ready.pop_front();
                return Ok(b);
            }
            self.pump(true)?;
        }
    }

    fn peek(&mut self) -> Result<Option<u8>, Self::Error> {
        loop {
            if let Some(b) = self.buffered()? {
                return Ok(Some(b));
            }
            if !self.pump(false)? {
                return Ok(None);
            }
        }
    }
}

/// The gdbstub crate ends the session, without a reply, on a packet with a bad checksum or
/// one it cannot parse (`mzz,10`, `vCont;x`, `Hc-5`, ...), and answers `OK` to an `M` or `X`
/// whose length disagrees with its data. The screen sees each packet whole before gdbstub
/// does: a bad checksum is answered with a NAK (`-`, and gdb sends it again), a malformed
/// packet of a command it knows with `E16` (EINVAL); only well-formed packets go on.
#[derive(Default)]
struct Screen {
    /// What came through, in order: bytes for gdbstub, and the screen's own answers.
    ready: VecDeque<Item>,
    /// `$...#xx` so far, if inside a packet.
    packet: Option<Vec<u8>>,
    /// Once gdb has asked for no-ack mode (gdbstub always grants it), nothing is acked.
    no_ack: bool,
}

/// One thing the screen let through.
enum Item {
    /// A byte for gdbstub.
    Byte(u8),
    /// The screen's answer to a packet it kept from gdbstub (`-`, or `+` and an error).
    Answer(Vec<u8>),
}

/// The longest packet gathered; gdbstub's own buffer is smaller, and says so itself.
const MAX_PACKET: usize = 1 << 20;

impl Screen {
    fn pass(&mut self, bytes: impl IntoIterator<Item = u8>) {
        self.ready.extend(bytes.into_iter().map(Item::Byte));
    }

    fn take(&mut self, b: u8) {
        let Some(packet) = &mut self.packet else {
            if b == b'$' {
                self.packet = Some(vec![b]);
            } else {
                self.ready.push_back(Item::Byte(b));
            }
            return;
        };
        packet.push(b);
        let n = packet.len();
        let complete = n >= 4 && packet[n - 3] == b'#';
        if !complete {
            if n > MAX_PACKET {
                // Let gdbstub deal with (and refuse) what it cannot hold.
                let gathered = self.packet.take().unwrap_or_default();
                self.pass(gathered);
            }
            return;
        }
        let packet = self.packet.take().unwrap_or_default();
        let body = &packet[1..n - 3];
        let sum = body.iter().fold(0u8, |a, x| a.wrapping_add(*x));
        let given = std::str::from_utf8(&packet[n - 2..])
            .ok()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        if given != Some(sum) {
            let answer = if self.no_ack {
                reply(b"E16")
            } else {
                vec![b'-']
            };
            self.ready.push_back(Item::Answer(answer));
            return;
        }
        if let Err(why) = check(body) {
            let mut answer = if self.no_ack { vec![] } else { vec![b'+'] };
            answer.extend_from_slice(&reply(why.as_bytes()));
            self.ready.push_back(Item::Answer(answer));
            return;
        }
        if body == b"QStartNoAckMode" {
            self.no_ack = true;
        }
        self.pass(packet);
    }
}

/// `$data#cs`.
pub(super) fn reply(data: &[u8]) -> Vec<u8> {
    let sum = data.iter().fold(0u8, |a, x| a.wrapping_add(*x));
    let mut out = Vec::with_capacity(data.len() + 4);
    out.push(b'$');
    out.extend_from_slice(data);
    out.extend_from_slice(format!("#{sum:02x}").as_bytes());
    out
}

fn is_hex(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(u8::is_ascii_hexdigit)
}

fn hex_num(s: &[u8]) -> Option<u64> {
    if !is_hex(s) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok()
}

/// A thread id: `-1`, `0`, hex, or `p<pid>.<tid>` with each part hex or `-1`.
fn thread_id(s: &[u8]) -> bool {
    let one = |s: &[u8]| s == b"-1" || is_hex(s);
    match s.strip_prefix(b"p") {
        Some(rest) => {
            let mut parts = rest.splitn(2, |&b| b == b'.');
            parts.next().is_some_and(one) && parts.next().is_none_or(one)
        }
        None => one(s),
    }
}

/// `addr,len` as numbers.
fn addr_len(s: &[u8]) -> Option<(u64, u64)> {
    let mut parts = s.splitn(2, |&b| b == b',');
    Some((hex_num(parts.next()?)?, hex_num(parts.next()?)?))
}

/// `E16` for a packet gdbstub would choke on or answer wrongly; `Ok` for everything else
/// (gdbstub answers what it does not know with an empty reply).
fn check(body: &[u8]) -> Result<(), &'static str> {
    const BAD: Result<(), &str> = Err("E16");
    let ok = |good: bool| if good { Ok(()) } else { BAD };
    let split = |s: &[u8], at: u8| {
        let mut p = s.splitn(2, move |&b| b == at);
        (
            p.next().unwrap_or_default().to_vec(),
            p.next().map(<[u8]>::to_vec),
        )
    };
    match body.first() {
        Some(b'm') => ok(addr_len(&body[1..]).is_some()),
        Some(b'M') => {
            let (head, data) = split(&body[1..], b':');
            match (addr_len(&head), data) {
                (Some((_, len)), Some(data)) => ok((data.is_empty() || is_hex(&data))
                    && data.len() as u64 == len.saturating_mul(2)),
                _ => BAD,
            }
        }
        Some(b'X') => {
            let (head, data) = split(&body[1..], b':');
            match (addr_len(&head), data) {
                (Some((_, len)), Some(data)) => {
                    // `}` escapes the byte after it.
                    let (mut count, mut i) = (0u64, 0);
                    while i < data.len() {
                        i += if data[i] == b'}' { 2 } else { 1 };
                        count += 1;
                    }
                    ok(i == data.len() && count == len)
                }
                _ => BAD,
            }
        }
        Some(b'G') => ok(is_hex(&body[1..]) && body.len() % 2 == 1),
        Some(b'H') => match body.get(1) {
            // `Hg-1` (memory of all threads at once) makes no sense, and gdbstub ends the
            // session on it.
            Some(b'c') => ok(thread_id(&body[2..])),
            Some(_) => ok(thread_id(&body[2..]) && &body[2..] != b"-1"),
            None => BAD,
        },
        Some(b'T') => ok(thread_id(&body[1..]) && &body[1..] != b"-1" && &body[1..] != b"0"),
        Some(b'Z' | b'z') => {
            let fields: Vec<&[u8]> = body[1..].splitn(3, |&b| b == b',').collect();
            match fields.as_slice() {
                [kind, addr, size] => {
                    // Conditions or commands may follow the size after a `;`.
                    let size = size.split(|&b| b == b';').next().unwrap_or_default();
                    ok(matches!(*kind, b"0" | b"1" | b"2" | b"3" | b"4")
                        && is_hex(addr)
                        && is_hex(size))
                }
                _ => BAD,
            }
        }
        _ => {
            if let Some(actions) = body.strip_prefix(b"vCont;") {
                return ok(actions.split(|&b| b == b';').all(vcont_action));
            }
            if let Some(hex) = body.strip_prefix(b"qRcmd,") {
                return ok(is_hex(hex) && hex.len() % 2 == 0);
            }
            if let Some(rest) = body.strip_prefix(b"qXfer:features:read:") {
                // The only annex there is: gdbstub ends the session on any other.
                let (annex, range) = split(rest, b':');
                return ok(annex == b"target.xml" && range.is_some_and(|r| addr_len(&r).is_some()));
            }
            Ok(())
        }
    }
}

/// One `vCont` action: `c`, `s`, `Cxx`, `Sxx` or `rstart,end`, with an optional
/// `:thread-id`. (`t`, stop, is for non-stop mode, which the stub does not offer.)
fn vcont_action(a: &[u8]) -> bool {
    let mut parts = a.splitn(2, |&b| b == b':');
    let action = parts.next().unwrap_or_default();
    let thread_ok = parts.next().is_none_or(thread_id);
    let action_ok = match action.first() {
        Some(b'c' | b's') => action.len() == 1,
        Some(b'C' | b'S') => action.len() == 3 && is_hex(&action[1..]),
        Some(b'r') => addr_len(&action[1..]).is_some(),
        _ => false,
    };
    thread_ok && action_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_reply_goes_out_in_one_write_at_flush_and_an_ack_at_once() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut conn = BufferedConn::new(ours);
        conn.write(b'+').unwrap();
        let mut ack = [0u8; 1];
        theirs.read_exact(&mut ack).unwrap();
        assert_eq!(&ack, b"+", "the ack is not held back");
        for b in b"$OK#9a" {
            conn.write(*b).unwrap();
        }
        theirs.set_nonblocking(true).unwrap();
        let mut held = [0u8; 8];
        assert!(
            Read::read(&mut theirs, &mut held).is_err(),
            "nothing before the flush"
        );
        conn.flush().unwrap();
        theirs.set_nonblocking(false).unwrap();
        let mut reply = [0u8; 6];
        theirs.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"$OK#9a");
    }

    #[test]
    fn reads_come_from_one_buffer_and_peek_does_not_block() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut conn = BufferedConn::new(ours);
        assert_eq!(conn.peek().unwrap(), None, "nothing sent yet");
        Write::write_all(&mut theirs, b"$g#67").unwrap();
        assert_eq!(conn.peek().unwrap(), Some(b'$'));
        let got: Vec<u8> = (0..5).map(|_| conn.read().unwrap()).collect();
        assert_eq!(got, b"$g#67");
        assert_eq!(conn.peek().unwrap(), None);
        drop(theirs);
        assert!(conn.read().is_err(), "gdb gone: end of file");
    }

    /// What the screen passes on, and what it answers itself.
    fn screened(input: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut screen = Screen::default();
        for &b in input {
            screen.take(b);
        }
        let (mut ready, mut answers) = (Vec::new(), Vec::new());
        for item in screen.ready {
            match item {
                Item::Byte(b) => ready.push(b),
                Item::Answer(a) => answers.extend(a),
            }
        }
        (ready, answers)
    }

    #[test]
    fn a_bad_checksum_is_naked_and_not_passed_on() {
        let (ready, answers) = screened(b"+$g#00$g#67\x03");
        assert_eq!(ready, b"+$g#67\x03");
        assert_eq!(answers, b"-");
    }

    #[test]
    fn malformed_packets_get_e16_and_good_ones_pass() {
        for bad in [
            &b"mzz,10"[..],
            b"m10",
            b"vCont;x",
            b"vCont;t",
            b"Hc-5",
            b"Hg-1",
            b"Gzzzz",
            b"Gabc",
            b"qXfer:features:read:foo.xml:0,fff",
            b"qRcmd,zz",
            b"Z1,zz,1",
            b"Z9,10,1",
            b"M1000,4:00",
            b"M1000,1:zz",
            b"X1000,4:a",
            b"X1000,1:}",
            b"T-1",
        ] {
            let (ready, answers) = screened(&reply(bad));
            assert!(
                ready.is_empty(),
                "{:?} passed on",
                String::from_utf8_lossy(bad)
            );
            let mut want = vec![b'+'];
            want.extend(reply(b"E16"));
            assert_eq!(answers, want, "{:?}", String::from_utf8_lossy(bad));
        }
        for good in [
            &b"m1000,10"[..],
            b"vCont;c",
            b"vCont;s:p1.2;c",
            b"vCont;C05:1",
            b"vCont;r1000,1010:2;c",
            b"vCont?",
            b"Hc-1",
            b"Hg0",
            b"Hgp1.2",
            b"G0011",
            b"qXfer:features:read:target.xml:0,fff",
            b"qRcmd,6869",
            b"Z1,1000,1",
            b"z0,1000,1;X1,0",
            b"M1000,2:0a0b",
            b"X1000,2:a}]",
            b"X1000,0:",
            b"qSupported:multiprocess+",
            b"T2",
        ] {
            let (ready, answers) = screened(&reply(good));
            assert_eq!(ready, reply(good), "{:?}", String::from_utf8_lossy(good));
            assert!(answers.is_empty(), "{:?}", String::from_utf8_lossy(good));
        }
    }

    #[test]
    fn in_no_ack_mode_nothing_is_acked() {
        let mut input = reply(b"QStartNoAckMode");
        input.extend(reply(b"mzz,1"));
        input.extend(b"$g#00");
        let (ready, answers) = screened(&input);
        assert_eq!(ready, reply(b"QStartNoAckMode"));
        let mut want = reply(b"E16");
        want.extend(reply(b"E16"));
        assert_eq!(answers, want);
    }

    #[test]
    fn the_connection_answers_what_the_screen_refuses_and_reads_on() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut conn = BufferedConn::new(ours);
        Write::write_all(&mut theirs, b"$mzz,10#00$mzz,10#").unwrap();
        let sum = b"mzz,10".iter().fold(0u8, |a, x| a.wrapping_add(*x));
        Write::write_all(&mut theirs, format!("{sum:02x}$g#67").as_bytes()).unwrap();
        let got: Vec<u8> = (0..5).map(|_| conn.read().unwrap()).collect();
        assert_eq!(got, b"$g#67");
        let mut answers = vec![0u8; 9];
        theirs.read_exact(&mut answers).unwrap();
        assert_eq!(answers, b"-+$E16#ac");
    }

    /// A good packet and a bad one in one read: the bad one's `E16` comes after the good
    /// one's reply, not before it.
    #[test]
    fn pipelined_packets_are_answered_in_order() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut conn = BufferedConn::new(ours);
        let mut input = reply(b"g");
        input.extend(reply(b"mzz,10"));
        Write::write_all(&mut theirs, &input).unwrap();
        let got: Vec<u8> = (0..5).map(|_| conn.read().unwrap()).collect();
        assert_eq!(got, reply(b"g"));
        // gdbstub answers the `g`, then reads on (and finds nothing more for it).
        conn.write_all(b"+$00#60").unwrap();
        conn.flush().unwrap();
        assert_eq!(conn.peek().unwrap(), None);
        let mut answers = vec![0u8; 15];
        theirs.read_exact(&mut answers).unwrap();
        assert_eq!(answers, b"+$00#60+$E16#ac");
    }
}

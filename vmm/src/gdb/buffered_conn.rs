//! gdb's connection, buffered both ways.
//!
//! The gdbstub crate writes a reply one byte at a time and reads a packet one byte at a time;
//! on a bare socket that is a system call per byte (a `g` reply alone is over a thousand), which
//! made the socket, not the VM, the cost of a gdb stop. Here a reply is gathered and sent in one
//! write at its flush, and reads take what the socket has, up to a buffer, at once.

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
}

impl<S: Read + Write + AsRawFd> BufferedConn<S> {
    /// Wraps `stream`, which must be in blocking mode.
    pub fn new(stream: S) -> Self {
        BufferedConn {
            stream,
            out: Vec::with_capacity(READ_CHUNK),
            input: Vec::with_capacity(READ_CHUNK),
            next: 0,
        }
    }

    fn buffered(&self) -> Option<u8> {
        self.input.get(self.next).copied()
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
        if self.buffered().is_none() {
            self.fill(true)?;
        }
        let byte = self.buffered().ok_or(ErrorKind::UnexpectedEof)?;
        self.next += 1;
        Ok(byte)
    }

    fn peek(&mut self) -> Result<Option<u8>, Self::Error> {
        if self.buffered().is_none() && !self.fill(false)? {
            return Ok(None);
        }
        Ok(self.buffered())
    }
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
}

//! Non-blocking reads of a child's output descriptors (pipes or a pty
//! master): a capped reader for the payload and a bounded tail for errors.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Size of one read.
const CHUNK: usize = 64 << 10;

/// Why a capped read stopped early.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// More than the cap arrived.
    OverCap,
    /// The read itself failed.
    Io(io::Error),
}

/// An output descriptor registered with the tokio reactor.
#[derive(Debug)]
pub(crate) struct Reader {
    fd: AsyncFd<File>,
}

impl Reader {
    /// Makes `fd` non-blocking and registers it.
    ///
    /// # Errors
    ///
    /// `fcntl` or reactor registration failures.
    pub(crate) fn new(fd: OwnedFd) -> io::Result<Self> {
        let flags = OFlag::from_bits_retain(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?);
        fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        // SAFETY: the `File` owns the descriptor and is never swapped out, so
        // it stays open and the same for the life of the `AsyncFd`.
        let fd = unsafe { AsyncFd::register_with_interest(File::from(fd), Interest::READABLE) };
        Ok(Self {
            fd: fd.map_err(|e| e.into_parts().1)?,
        })
    }

    /// Reads some bytes; `Ok(0)` at end of file. EIO also counts as end of
    /// file: a pty master reports it once the slave is closed everywhere.
    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.fd.readable().await?;
            match ready.try_io(|fd| fd.get_ref().read(buf)) {
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Reads to end of file, failing as soon as more than `cap` bytes came.
    ///
    /// # Errors
    ///
    /// [`ReadError::OverCap`] past the cap, [`ReadError::Io`] on read errors.
    pub(crate) async fn read_capped(&self, cap: usize) -> Result<Vec<u8>, ReadError> {
        let mut out = Vec::new();
        let mut buf = vec![0; CHUNK];
        loop {
            let n = self.read(&mut buf).await.map_err(ReadError::Io)?;
            if n == 0 {
                return Ok(out);
            }
            if out.len() + n > cap {
                return Err(ReadError::OverCap);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    /// Reads to end of file, keeping only the last `keep` bytes.
    ///
    /// # Errors
    ///
    /// Read errors.
    pub(crate) async fn read_tail(&self, keep: usize) -> io::Result<Vec<u8>> {
        let mut tail = Vec::new();
        let mut buf = vec![0; CHUNK];
        loop {
            let n = self.read(&mut buf).await?;
            if n == 0 {
                return Ok(tail);
            }
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > keep {
                tail.drain(..tail.len() - keep);
            }
        }
    }
}

/// The last `keep` bytes of `bytes`, not starting inside a UTF-8 sequence.
pub(crate) fn tail_of(bytes: &[u8], keep: usize) -> &[u8] {
    let mut tail = &bytes[bytes.len().saturating_sub(keep)..];
    while let [first, rest @ ..] = tail {
        if first & 0b1100_0000 != 0b1000_0000 {
            break;
        }
        tail = rest;
    }
    tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_of_keeps_the_end() {
        assert_eq!(tail_of(b"abcdef", 3), b"def");
        assert_eq!(tail_of(b"ab", 3), b"ab");
    }

    #[test]
    fn tail_of_skips_a_cut_utf8_sequence() {
        let text = "aé".as_bytes(); // 'é' is two bytes
        assert_eq!(tail_of(text, 1), b"");
        assert_eq!(tail_of(text, 2), "é".as_bytes());
    }
}

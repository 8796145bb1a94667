//! Reading the kernel's ring buffer: [`EventReader`] drains `EVENTS`, decodes each record once
//! into a [`Record`] (see [`crate::record`]) and handles engine-internal records itself (a
//! classified socket is deleted from the SOCKHASH here, so it stops paying the sk_msg cost; a
//! connection whose unseen payload the backstop refused is destroyed here, so its sender gets
//! an error). It owns its map handles, so it can live on another thread than the
//! [`super::Engine`].

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use aya::maps::{MapData, RingBuf, SockHash};
use daemon_common::{
    SockClassifiedEvent, SockUnseenEvent, EVENT_SOCK_CLASSIFIED, EVENT_SOCK_UNSEEN,
};

use crate::record::{self, DecodeError, Record};

/// What a raw record decodes to: a record for the pipeline (or why it could not be decoded),
/// or a socket to release.
#[derive(Debug)]
pub(crate) enum Decoded {
    Record(Result<Record, DecodeError>),
    SockClassified(SockClassifiedEvent),
    SockUnseen(SockUnseenEvent),
}

/// Decodes one raw record (never panics on short or unknown input).
pub(crate) fn decode(data: &[u8]) -> Decoded {
    match record::kind_of(data) {
        Some(EVENT_SOCK_CLASSIFIED) => {
            return match record::read(data, EVENT_SOCK_CLASSIFIED) {
                Ok(s) => Decoded::SockClassified(s),
                Err(e) => Decoded::Record(Err(e)),
            };
        }
        Some(EVENT_SOCK_UNSEEN) => {
            return match record::read(data, EVENT_SOCK_UNSEEN) {
                Ok(s) => Decoded::SockUnseen(s),
                Err(e) => Decoded::Record(Err(e)),
            };
        }
        _ => {}
    }
    Decoded::Record(record::decode(data))
}

/// Drains the kernel's event ring buffer. Poll it with [`EventReader::wait`] or register
/// [`AsRawFd::as_raw_fd`] with epoll/tokio `AsyncFd` (readable = records available), then call
/// [`EventReader::next_record`] until it returns `None`.
pub struct EventReader {
    ring: RingBuf<MapData>,
    sockhash: SockHash<MapData, u64>,
    released: u64,
    release_failed: u64,
    destroyed: u64,
    destroy_failed: u64,
}

impl EventReader {
    pub(crate) fn new(ring: RingBuf<MapData>, sockhash: SockHash<MapData, u64>) -> Self {
        EventReader {
            ring,
            sockhash,
            released: 0,
            release_failed: 0,
            destroyed: 0,
            destroy_failed: 0,
        }
    }

    /// The next record (or why it could not be decoded: a record this build does not know or
    /// that was too short, counted by the pipeline, never fatal), or `None` when the buffer is
    /// empty right now (non-blocking).
    pub fn next_record(&mut self) -> Option<Result<Record, DecodeError>> {
        loop {
            let decoded = {
                let item = self.ring.next()?;
                decode(&item)
            };
            match decoded {
                Decoded::Record(r) => return Some(r),
                Decoded::SockClassified(s) => {
                    // The socket may already be gone (closed sockets leave the map).
                    match self.sockhash.remove(&s.cookie) {
                        Ok(()) => self.released += 1,
                        Err(_) => self.release_failed += 1,
                    }
                }
                Decoded::SockUnseen(u) => {
                    let (local, remote) = (
                        super::sockets::socket_addr(&u.local),
                        super::sockets::socket_addr(&u.remote),
                    );
                    match super::sockets::destroy_connection(
                        u.header.tgid,
                        &local,
                        &remote,
                        u.cookie,
                    ) {
                        Ok(()) => self.destroyed += 1,
                        Err(e) => {
                            // Already closed, or the namespace is gone: its payload stays
                            // refused either way.
                            log::warn!("cannot destroy connection {local} -> {remote}: {e}");
                            self.destroy_failed += 1;
                        }
                    }
                }
            }
        }
    }

    /// Blocks until records are available or `timeout` passes (None: forever). Returns whether
    /// the buffer is readable. EINTR counts as "not readable".
    pub fn wait(&self, timeout: Option<Duration>) -> std::io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(e);
        }
        Ok(r > 0 && pfd.revents & libc::POLLIN != 0)
    }

    /// Sockets released from the SOCKHASH after classification (and removals that found the
    /// socket already gone).
    pub fn sockets_released(&self) -> (u64, u64) {
        (self.released, self.release_failed)
    }

    /// Connections destroyed after the backstop refused their unseen payload (and attempts
    /// that failed).
    pub fn connections_destroyed(&self) -> (u64, u64) {
        (self.destroyed, self.destroy_failed)
    }
}

impl AsRawFd for EventReader {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

impl AsFd for EventReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::as_bytes;
    use daemon_common::{ExitEvent, MatchEvent, EVENT_EXIT, EVENT_MATCH};

    #[test]
    fn decodes_records_and_engine_internal_ones() {
        let mut exit = ExitEvent::default();
        exit.header.kind = EVENT_EXIT;
        exit.header.tgid = 42;
        exit.exit_code = 9;
        match decode(&as_bytes(&exit)) {
            Decoded::Record(Ok(Record::Exit(e))) => {
                assert_eq!((e.header.tgid, e.exit_code), (42, 9))
            }
            other => panic!("{other:?}"),
        }
        let mut m = MatchEvent::default();
        m.header.kind = EVENT_MATCH;
        m.selector = 3;
        match decode(&as_bytes(&m)) {
            Decoded::Record(Ok(Record::Match(e))) => assert_eq!(e.selector, 3),
            other => panic!("{other:?}"),
        }
        let mut s = SockClassifiedEvent::default();
        s.header.kind = EVENT_SOCK_CLASSIFIED;
        s.cookie = 77;
        let b = as_bytes(&s);
        match decode(&b) {
            Decoded::SockClassified(e) => assert_eq!(e.cookie, 77),
            other => panic!("{other:?}"),
        }
        // Short engine-internal records are decode errors too, not panics.
        match decode(&b[..b.len() - 1]) {
            Decoded::Record(Err(DecodeError::TooShort { kind, .. })) => {
                assert_eq!(kind, EVENT_SOCK_CLASSIFIED)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn short_or_unknown_records_are_decode_errors_not_panics() {
        let mut exit = ExitEvent::default();
        exit.header.kind = EVENT_EXIT;
        let b = as_bytes(&exit);
        match decode(&b[..b.len() - 1]) {
            Decoded::Record(Err(DecodeError::TooShort { kind, len, .. })) => {
                assert_eq!((kind, len), (EVENT_EXIT, b.len() - 1))
            }
            other => panic!("{other:?}"),
        }
        match decode(&[1, 2]) {
            Decoded::Record(Err(DecodeError::TooShort {
                kind: 0, len: 2, ..
            })) => {}
            other => panic!("{other:?}"),
        }
        match decode(&99u32.to_ne_bytes()) {
            Decoded::Record(Err(DecodeError::UnknownKind(99))) => {}
            other => panic!("{other:?}"),
        }
    }
}

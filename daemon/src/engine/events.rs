//! Reading the kernel's ring buffer: [`EventReader`] drains `EVENTS`, decodes each record into
//! an [`Event`] (copies of the `daemon-common` structs) and handles engine-internal records
//! itself (a classified socket is deleted from the SOCKHASH here, so it stops paying the sk_msg
//! cost; a connection whose unseen payload the backstop refused is destroyed here, so its
//! sender gets an error). It owns its map handles, so it can live on another thread than the
//! [`super::Engine`].

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use aya::maps::{MapData, RingBuf, SockHash};
use daemon_common::*;

/// One decoded ring-buffer record.
#[derive(Debug, Clone)]
pub enum Event {
    Exec(Box<ExecEvent>),
    Exit(ExitEvent),
    Fork(ForkEvent),
    Connect(ConnectEvent),
    Match(MatchEvent),
    /// A record this build does not know or that was too short (counted, never fatal).
    Malformed {
        kind: u32,
        len: usize,
    },
}

impl Event {
    /// The header common to all records (None for `Malformed`).
    pub fn header(&self) -> Option<&EventHeader> {
        match self {
            Event::Exec(e) => Some(&e.header),
            Event::Exit(e) => Some(&e.header),
            Event::Fork(e) => Some(&e.header),
            Event::Connect(e) => Some(&e.header),
            Event::Match(e) => Some(&e.header),
            Event::Malformed { .. } => None,
        }
    }
}

/// Copies a `T` out of `data` when it is long enough.
fn read<T: Copy>(data: &[u8]) -> Option<T> {
    (data.len() >= std::mem::size_of::<T>())
        .then(|| unsafe { std::ptr::read_unaligned(data.as_ptr().cast::<T>()) })
}

/// What a raw record decodes to: a user-facing event, or a socket to release.
#[derive(Debug)]
pub(crate) enum Decoded {
    Event(Event),
    SockClassified(SockClassifiedEvent),
    SockUnseen(SockUnseenEvent),
}

/// Decodes one raw record (never panics on short or unknown input).
pub(crate) fn decode(data: &[u8]) -> Decoded {
    let kind = read::<u32>(data).unwrap_or(0);
    let bad = || {
        Decoded::Event(Event::Malformed {
            kind,
            len: data.len(),
        })
    };
    match kind {
        EVENT_EXEC => {
            read::<ExecEvent>(data).map_or_else(bad, |e| Decoded::Event(Event::Exec(Box::new(e))))
        }
        EVENT_EXIT => read(data).map_or_else(bad, |e| Decoded::Event(Event::Exit(e))),
        EVENT_FORK => read(data).map_or_else(bad, |e| Decoded::Event(Event::Fork(e))),
        EVENT_CONNECT => read(data).map_or_else(bad, |e| Decoded::Event(Event::Connect(e))),
        EVENT_MATCH => read(data).map_or_else(bad, |e| Decoded::Event(Event::Match(e))),
        EVENT_SOCK_CLASSIFIED => read(data).map_or_else(bad, Decoded::SockClassified),
        EVENT_SOCK_UNSEEN => read(data).map_or_else(bad, Decoded::SockUnseen),
        _ => bad(),
    }
}

/// Drains the kernel's event ring buffer. Poll it with [`EventReader::wait`] or register
/// [`AsRawFd::as_raw_fd`] with epoll/tokio `AsyncFd` (readable = records available), then call
/// [`EventReader::next_event`] until it returns `None`.
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

    /// The next record, or `None` when the buffer is empty right now (non-blocking).
    pub fn next_event(&mut self) -> Option<Event> {
        loop {
            let decoded = {
                let item = self.ring.next()?;
                decode(&item)
            };
            match decoded {
                Decoded::Event(e) => return Some(e),
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

    fn bytes<T>(v: &T) -> Vec<u8> {
        unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }

    #[test]
    fn decodes_each_kind() {
        let mut exit = ExitEvent::default();
        exit.header.kind = EVENT_EXIT;
        exit.header.tgid = 42;
        exit.exit_code = 9;
        match decode(&bytes(&exit)) {
            Decoded::Event(Event::Exit(e)) => assert_eq!((e.header.tgid, e.exit_code), (42, 9)),
            other => panic!("{other:?}"),
        }
        let mut m = MatchEvent::default();
        m.header.kind = EVENT_MATCH;
        m.selector = 3;
        match decode(&bytes(&m)) {
            Decoded::Event(Event::Match(e)) => assert_eq!(e.selector, 3),
            other => panic!("{other:?}"),
        }
        let mut s = SockClassifiedEvent::default();
        s.header.kind = EVENT_SOCK_CLASSIFIED;
        s.cookie = 77;
        match decode(&bytes(&s)) {
            Decoded::SockClassified(e) => assert_eq!(e.cookie, 77),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn short_or_unknown_records_are_malformed_not_panics() {
        let mut exit = ExitEvent::default();
        exit.header.kind = EVENT_EXIT;
        let b = bytes(&exit);
        match decode(&b[..b.len() - 1]) {
            Decoded::Event(Event::Malformed { kind, len }) => {
                assert_eq!((kind, len), (EVENT_EXIT, b.len() - 1))
            }
            other => panic!("{other:?}"),
        }
        match decode(&[1, 2]) {
            Decoded::Event(Event::Malformed { kind: 0, len: 2 }) => {}
            other => panic!("{other:?}"),
        }
        match decode(&99u32.to_ne_bytes()) {
            Decoded::Event(Event::Malformed { kind: 99, .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}

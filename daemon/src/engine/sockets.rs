//! Privileged socket helpers of the engine: finding the TCP sockets processes hold
//! (`/proc/PID/fd` + `pidfd_getfd`), what such a socket has sent (`TCP_INFO`), and destroying a
//! connection with netlink `SOCK_DESTROY` in the socket's own network namespace (like
//! `ss -K`; needs `CONFIG_INET_DIAG_DESTROY`): the sender then gets an error (ECONNABORTED)
//! instead of a stall of retransmissions the backstop keeps dropping.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use daemon_common::Destination;

const TCP_ESTABLISHED: u8 = 1;
const TCP_LISTEN: u8 = 10;
const SIOCGSKNS: libc::c_ulong = 0x894C;
const SOCK_DESTROY: u16 = 21;
const NETLINK_SOCK_DIAG: libc::c_int = 4;

/// What `TCP_INFO` says about a socket (the fields the engine needs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpInfo {
    pub state: u8,
    /// Bytes sent, retransmissions included (`tcpi_bytes_sent`).
    pub bytes_sent: u64,
    /// Bytes written but not sent yet (`tcpi_notsent_bytes`).
    pub notsent: u32,
}

impl TcpInfo {
    /// Whether the socket never sent a byte and has none queued.
    pub fn never_sent(&self) -> bool {
        self.bytes_sent == 0 && self.notsent == 0
    }
}

/// An established, actively opened TCP socket some processes hold, duplicated into this
/// process.
#[derive(Debug)]
pub struct HeldSocket {
    pub fd: OwnedFd,
    /// Processes (tgids) that hold it, lowest first.
    pub holders: Vec<u32>,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub info: TcpInfo,
    pub cookie: u64,
}

fn getsockopt<T: Default>(fd: BorrowedFd, level: libc::c_int, name: libc::c_int) -> io::Result<T> {
    let mut v = T::default();
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: v is a writable T of `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut v as *mut T).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// The socket cookie (its key in the SOCKHASH).
pub fn cookie(fd: BorrowedFd) -> io::Result<u64> {
    getsockopt::<u64>(fd, libc::SOL_SOCKET, libc::SO_COOKIE)
}

/// `TCP_INFO` of a TCP socket.
pub fn tcp_info(fd: BorrowedFd) -> io::Result<TcpInfo> {
    let mut raw = [0u8; 232];
    let mut len = raw.len() as libc::socklen_t;
    // SAFETY: raw is writable for len bytes.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            raw.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    if (len as usize) < 208 {
        return Err(io::Error::other(format!(
            "TCP_INFO is {len} bytes: the kernel is too old to report bytes sent"
        )));
    }
    let u64_at = |at: usize| u64::from_ne_bytes(raw[at..at + 8].try_into().unwrap_or([0; 8]));
    let u32_at = |at: usize| u32::from_ne_bytes(raw[at..at + 4].try_into().unwrap_or([0; 4]));
    Ok(TcpInfo {
        state: raw[0],
        bytes_sent: u64_at(200),
        notsent: u32_at(144),
    })
}

fn sockaddr(fd: BorrowedFd, peer: bool) -> io::Result<SocketAddr> {
    // SAFETY: sockaddr_storage is plain data; the kernel fills at most `len` bytes.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let p = (&mut ss as *mut libc::sockaddr_storage).cast();
    let r = unsafe {
        if peer {
            libc::getpeername(fd.as_raw_fd(), p, &mut len)
        } else {
            libc::getsockname(fd.as_raw_fd(), p, &mut len)
        }
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let a: libc::sockaddr_in = unsafe { std::ptr::read(p.cast()) };
            Ok(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))),
                u16::from_be(a.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let a: libc::sockaddr_in6 = unsafe { std::ptr::read(p.cast()) };
            Ok(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)),
                u16::from_be(a.sin6_port),
            ))
        }
        f => Err(io::Error::other(format!("address family {f} is not IP"))),
    }
}

/// The destination as the kernel programs match it (IPv4-mapped IPv6 is IPv4).
pub fn destination(addr: &SocketAddr) -> Destination {
    let mut d = Destination {
        port: addr.port(),
        protocol: daemon_common::PROTO_TCP,
        ..Destination::default()
    };
    let ip = match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            d.family = libc::AF_INET as u8;
            d.addr[..4].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            d.family = libc::AF_INET6 as u8;
            d.addr = v6.octets();
        }
    }
    d
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; a non-negative result is a new descriptor we own.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// A duplicate of descriptor `fd` of process `pid` (needs ptrace rights over it: root).
pub fn take_fd(pid: u32, fd: i32) -> io::Result<OwnedFd> {
    let pidfd = pidfd_open(pid)?;
    // SAFETY: plain syscall; a non-negative result is a new descriptor we own.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// Process ids under `/proc` (thread-group leaders).
fn pids() -> Vec<u32> {
    let mut out: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    out.sort_unstable();
    out
}

/// `(fd number, socket inode)` of every socket process `pid` holds.
fn socket_fds(pid: u32) -> Vec<(i32, u64)> {
    let dir = format!("/proc/{pid}/fd");
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(fd) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        let t = target.to_string_lossy();
        if let Some(ino) = t
            .strip_prefix("socket:[")
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|n| n.parse().ok())
        {
            out.push((fd, ino));
        }
    }
    out
}

/// Network namespace inode of a process (0 when unknown).
fn netns_of(pid: u32) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/net")).map_or(0, |m| m.ino())
}

fn is_tcp(fd: BorrowedFd) -> bool {
    let domain = getsockopt::<libc::c_int>(fd, libc::SOL_SOCKET, libc::SO_DOMAIN);
    let ty = getsockopt::<libc::c_int>(fd, libc::SOL_SOCKET, libc::SO_TYPE);
    let proto = getsockopt::<libc::c_int>(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL);
    matches!(domain, Ok(libc::AF_INET) | Ok(libc::AF_INET6))
        && ty.ok() == Some(libc::SOCK_STREAM)
        && proto.ok() == Some(libc::IPPROTO_TCP)
}

/// Every established, actively opened TCP socket held by a process other than `skip`. A socket
/// whose local port is a listening port in the same network namespace was accepted, not
/// opened, and is left out (the kernel programs watch active connections only).
pub fn tcp_sockets(skip: u32) -> Vec<HeldSocket> {
    let mut by_inode: HashMap<u64, (u32, i32, Vec<u32>)> = HashMap::new();
    let mut order = Vec::new();
    for pid in pids() {
        if pid == skip {
            continue;
        }
        for (fd, ino) in socket_fds(pid) {
            let e = by_inode.entry(ino).or_insert_with(|| {
                order.push(ino);
                (pid, fd, Vec::new())
            });
            if !e.2.contains(&pid) {
                e.2.push(pid);
            }
        }
    }
    let mut listening: HashSet<(u64, u16)> = HashSet::new();
    let mut candidates = Vec::new();
    for ino in order {
        let (pid, fd, holders) = by_inode.remove(&ino).unwrap_or_default();
        let Ok(dup) = take_fd(pid, fd) else {
            continue;
        };
        if !is_tcp(dup.as_fd()) {
            continue;
        }
        let Ok(info) = tcp_info(dup.as_fd()) else {
            continue;
        };
        let Ok(local) = sockaddr(dup.as_fd(), false) else {
            continue;
        };
        let ns = netns_of(pid);
        if info.state == TCP_LISTEN {
            listening.insert((ns, local.port()));
            continue;
        }
        if info.state != TCP_ESTABLISHED {
            continue;
        }
        let Ok(peer) = sockaddr(dup.as_fd(), true) else {
            continue;
        };
        let Ok(cookie) = cookie(dup.as_fd()) else {
            continue;
        };
        candidates.push((
            ns,
            HeldSocket {
                fd: dup,
                holders,
                local,
                peer,
                info,
                cookie,
            },
        ));
    }
    candidates
        .into_iter()
        .filter(|(ns, s)| !listening.contains(&(*ns, s.local.port())))
        .map(|(_, s)| s)
        .collect()
}

/// The network namespace a socket lives in.
fn socket_netns(fd: BorrowedFd) -> io::Result<OwnedFd> {
    // SAFETY: SIOCGSKNS takes no argument and returns a new descriptor.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), SIOCGSKNS as _) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// Destroys the connection of socket `fd` (found through its own addresses and cookie).
pub fn destroy(fd: BorrowedFd) -> io::Result<()> {
    let local = sockaddr(fd, false)?;
    let peer = sockaddr(fd, true)?;
    let cookie = cookie(fd)?;
    let ns = socket_netns(fd)?;
    destroy_in(ns.as_fd(), &local, &peer, cookie)
}

/// Destroys the TCP connection `local` -> `remote` with socket cookie `cookie` in whichever
/// network namespace holds it: first the one of process `hint`, then every namespace a process
/// is in. The cookie makes the match exact, so asking a namespace that lacks it is harmless.
pub fn destroy_connection(
    hint: u32,
    local: &SocketAddr,
    remote: &SocketAddr,
    cookie: u64,
) -> io::Result<()> {
    let mut tried = HashSet::new();
    let mut last = io::Error::from_raw_os_error(libc::ENOENT);
    for pid in std::iter::once(hint).chain(pids()) {
        let ino = netns_of(pid);
        if ino == 0 || !tried.insert(ino) {
            continue;
        }
        let Ok(ns) = std::fs::File::open(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        match destroy_in(ns.as_fd(), local, remote, cookie) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A socket address from a kernel [`Destination`] (`family` AF_INET or AF_INET6).
pub fn socket_addr(d: &Destination) -> SocketAddr {
    let ip = if d.family as i32 == libc::AF_INET6 {
        IpAddr::V6(Ipv6Addr::from(d.addr))
    } else {
        IpAddr::V4(Ipv4Addr::new(d.addr[0], d.addr[1], d.addr[2], d.addr[3]))
    };
    SocketAddr::new(ip, d.port)
}

/// The `SOCK_DESTROY` request for one TCP connection (netlink header + `inet_diag_req_v2`).
fn destroy_request(local: &SocketAddr, remote: &SocketAddr, cookie: u64) -> Vec<u8> {
    let family = match (local, remote) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => libc::AF_INET,
        _ => libc::AF_INET6,
    };
    let words = |a: &SocketAddr| -> [u8; 16] {
        match a.ip() {
            IpAddr::V4(v4) if family == libc::AF_INET => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&v4.octets());
                b
            }
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        }
    };
    let mut req = Vec::with_capacity(16 + 56);
    let len = 16u32 + 56;
    req.extend_from_slice(&len.to_ne_bytes());
    req.extend_from_slice(&SOCK_DESTROY.to_ne_bytes());
    req.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid
    req.push(family as u8);
    req.push(libc::IPPROTO_TCP as u8);
    req.push(0); // idiag_ext
    req.push(0); // pad
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    req.extend_from_slice(&local.port().to_be_bytes());
    req.extend_from_slice(&remote.port().to_be_bytes());
    req.extend_from_slice(&words(local));
    req.extend_from_slice(&words(remote));
    req.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    req.extend_from_slice(&(cookie as u32).to_ne_bytes());
    req.extend_from_slice(&((cookie >> 32) as u32).to_ne_bytes());
    req
}

/// Sends `SOCK_DESTROY` from a thread that entered network namespace `ns` (setns affects only
/// the calling thread, which ends right after).
fn destroy_in(
    ns: BorrowedFd,
    local: &SocketAddr,
    remote: &SocketAddr,
    cookie: u64,
) -> io::Result<()> {
    let req = destroy_request(local, remote, cookie);
    let ns = ns.try_clone_to_owned()?;
    std::thread::scope(|s| {
        s.spawn(move || -> io::Result<()> {
            // SAFETY: plain syscalls on descriptors this thread owns.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let nl = unsafe {
                libc::socket(
                    libc::AF_NETLINK,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    NETLINK_SOCK_DIAG,
                )
            };
            if nl < 0 {
                return Err(io::Error::last_os_error());
            }
            let nl = unsafe { OwnedFd::from_raw_fd(nl) };
            let tv = libc::timeval {
                tv_sec: 2,
                tv_usec: 0,
            };
            unsafe {
                libc::setsockopt(
                    nl.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                );
            }
            let n = unsafe { libc::send(nl.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut buf = [0u8; 512];
            let n = unsafe { libc::recv(nl.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            // NLMSG_ERROR (2): an errno, 0 = done.
            if n >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == 2 {
                let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
                if err != 0 {
                    return Err(io::Error::from_raw_os_error(-err));
                }
                return Ok(());
            }
            Err(io::Error::other(
                "unexpected netlink answer to SOCK_DESTROY",
            ))
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("SOCK_DESTROY thread panicked")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destroy_request_layout() {
        let l: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        let r: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let req = destroy_request(&l, &r, 0x1122_3344_5566_7788);
        assert_eq!(req.len(), 72);
        assert_eq!(u32::from_ne_bytes(req[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes([req[4], req[5]]), SOCK_DESTROY);
        assert_eq!((req[16], req[17]), (libc::AF_INET as u8, 6));
        assert_eq!(&req[24..26], &40000u16.to_be_bytes());
        assert_eq!(&req[26..28], &80u16.to_be_bytes());
        assert_eq!(&req[28..32], &[10, 0, 0, 1]);
        assert_eq!(&req[44..48], &[10, 0, 0, 2]);
        assert_eq!(
            u32::from_ne_bytes(req[64..68].try_into().unwrap()),
            0x5566_7788
        );
        assert_eq!(
            u32::from_ne_bytes(req[68..72].try_into().unwrap()),
            0x1122_3344
        );
        // A v4 peer of a v6 socket is written v4-mapped.
        let l6: SocketAddr = "[::ffff:10.0.0.1]:1".parse().unwrap();
        let req = destroy_request(&l6, &r, 1);
        assert_eq!(req[16], libc::AF_INET6 as u8);
        assert_eq!(
            &req[44..60],
            &Ipv4Addr::new(10, 0, 0, 2).to_ipv6_mapped().octets()
        );
    }

    #[test]
    fn destinations_fold_v4_mapped_addresses() {
        let d = destination(&"[::ffff:10.1.2.3]:443".parse().unwrap());
        assert_eq!(
            (d.family, &d.addr[..4], d.port),
            (2, &[10, 1, 2, 3][..], 443)
        );
        assert_eq!(
            socket_addr(&d),
            "10.1.2.3:443".parse::<SocketAddr>().unwrap()
        );
        let d = destination(&"[fd00::1]:80".parse().unwrap());
        assert_eq!(d.family, 10);
        assert_eq!(
            socket_addr(&d),
            "[fd00::1]:80".parse::<SocketAddr>().unwrap()
        );
    }

    /// Root: a real connection over loopback is found, never sent counts, and destroying it
    /// aborts it for its owner.
    #[test]
    fn finds_and_destroys_a_loopback_connection() {
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        use std::io::Read;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut srv, _) = l.accept().unwrap();
        let info = tcp_info(c.as_fd()).unwrap();
        assert_eq!(info.state, TCP_ESTABLISHED);
        assert!(info.never_sent());
        destroy(c.as_fd()).expect("SOCK_DESTROY");
        let mut b = [0u8; 1];
        // The peer sees the reset (or EOF); the owner's next write fails.
        let _ = srv.read(&mut b);
        let mut w = &c;
        use std::io::Write;
        assert!(
            w.write_all(b"x").is_err(),
            "the destroyed socket still writes"
        );
    }
}

//! A minimal io_uring client for the e2e workloads (no liburing on the test machines): one ring,
//! one submission at a time, the socket registered as a fixed file so no descriptor of it is
//! left in the process's table (`IOSQE_FIXED_FILE`). Enough to connect and send the way a
//! workload that avoids the socket system calls would.

use std::net::SocketAddr;

const SYS_IO_URING_SETUP: libc::c_long = 425;
const SYS_IO_URING_ENTER: libc::c_long = 426;
const SYS_IO_URING_REGISTER: libc::c_long = 427;
const IORING_OFF_SQ_RING: libc::off_t = 0;
const IORING_OFF_CQ_RING: libc::off_t = 0x800_0000;
const IORING_OFF_SQES: libc::off_t = 0x1000_0000;
const IORING_ENTER_GETEVENTS: u32 = 1;
const IORING_REGISTER_FILES: u32 = 2;
const IOSQE_FIXED_FILE: u8 = 1;
const IORING_CQE_F_NOTIF: u32 = 1 << 3;

/// The operations the tests use (`enum io_uring_op`).
pub const OP_SENDMSG: u8 = 9;
pub const OP_CONNECT: u8 = 16;
pub const OP_SEND: u8 = 26;
pub const OP_SEND_ZC: u8 = 47;

#[repr(C)]
#[derive(Default)]
struct SqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default)]
struct CqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqOffsets,
    cq_off: CqOffsets,
}

/// `struct io_uring_sqe`, the fields these operations use.
#[repr(C)]
#[derive(Default, Clone, Copy)]
pub struct Sqe {
    pub opcode: u8,
    pub flags: u8,
    pub ioprio: u16,
    pub fd: i32,
    pub off: u64,
    pub addr: u64,
    pub len: u32,
    pub msg_flags: u32,
    pub user_data: u64,
    pub buf_index: u16,
    pub personality: u16,
    pub file_index: i32,
    pub addr3: u64,
    pub pad: u64,
}

#[repr(C)]
struct Cqe {
    user_data: u64,
    res: i32,
    flags: u32,
}

/// A ring with one socket registered as fixed file 0.
pub struct Ring {
    fd: i32,
    sq: *mut u8,
    cq: *mut u8,
    sqes: *mut Sqe,
    p: Params,
    next: u64,
}

fn map(fd: i32, len: usize, off: libc::off_t) -> Result<*mut u8, String> {
    // SAFETY: a shared mapping of the ring's own regions, at the offsets the kernel defines.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd,
            off,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!("mmap: {}", std::io::Error::last_os_error()));
    }
    Ok(p.cast())
}

impl Ring {
    /// Sets up a ring and registers `socket` as its fixed file 0.
    pub fn with_fixed_socket(socket: i32) -> Result<Ring, String> {
        let mut p = Params::default();
        // SAFETY: io_uring_setup with a valid params struct.
        let fd = unsafe { libc::syscall(SYS_IO_URING_SETUP, 4, &mut p as *mut Params) } as i32;
        if fd < 0 {
            return Err(format!(
                "io_uring_setup: {}",
                std::io::Error::last_os_error()
            ));
        }
        let sq_len = p.sq_off.array as usize + p.sq_entries as usize * 4;
        let cq_len = p.cq_off.cqes as usize + p.cq_entries as usize * std::mem::size_of::<Cqe>();
        let sq = map(fd, sq_len, IORING_OFF_SQ_RING)?;
        let cq = map(fd, cq_len, IORING_OFF_CQ_RING)?;
        let sqes = map(
            fd,
            p.sq_entries as usize * std::mem::size_of::<Sqe>(),
            IORING_OFF_SQES,
        )?
        .cast();
        let files = [socket];
        // SAFETY: registers one valid descriptor.
        let r = unsafe {
            libc::syscall(
                SYS_IO_URING_REGISTER,
                fd,
                IORING_REGISTER_FILES,
                files.as_ptr(),
                1,
            )
        };
        if r < 0 {
            return Err(format!(
                "IORING_REGISTER_FILES: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Ring {
            fd,
            sq,
            cq,
            sqes,
            p,
            next: 1,
        })
    }

    fn at<T>(base: *mut u8, off: u32) -> *mut T {
        // SAFETY: offsets the kernel gave for this mapping.
        unsafe { base.add(off as usize).cast() }
    }

    /// Submits `sqe` on fixed file 0 and waits for its completion: the operation's result
    /// (negative errno on failure). A zero-copy send's later notification is skipped.
    pub fn run(&mut self, mut sqe: Sqe) -> i32 {
        use std::sync::atomic::{AtomicU32, Ordering};
        sqe.fd = 0;
        sqe.flags |= IOSQE_FIXED_FILE;
        sqe.user_data = self.next;
        self.next += 1;
        let o = &self.p.sq_off;
        // SAFETY: the ring's shared head/tail words, accessed atomically as the ABI requires;
        // one submission in flight at a time, so the slot at `tail` is free.
        unsafe {
            let tail = &*Self::at::<AtomicU32>(self.sq, o.tail);
            let mask = *Self::at::<u32>(self.sq, o.ring_mask);
            let t = tail.load(Ordering::Acquire);
            let idx = t & mask;
            *self.sqes.add(idx as usize) = sqe;
            *Self::at::<u32>(self.sq, o.array).add(idx as usize) = idx;
            tail.store(t.wrapping_add(1), Ordering::Release);
        }
        let c = &self.p.cq_off;
        loop {
            // SAFETY: io_uring_enter on our ring.
            let r = unsafe {
                libc::syscall(
                    SYS_IO_URING_ENTER,
                    self.fd,
                    1,
                    1,
                    IORING_ENTER_GETEVENTS,
                    std::ptr::null::<u8>(),
                    0,
                )
            };
            if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return -std::io::Error::last_os_error().raw_os_error().unwrap_or(1);
            }
            // SAFETY: as above, for the completion ring.
            unsafe {
                let head = &*Self::at::<AtomicU32>(self.cq, c.head);
                let tail = &*Self::at::<AtomicU32>(self.cq, c.tail);
                let mask = *Self::at::<u32>(self.cq, c.ring_mask);
                loop {
                    let h = head.load(Ordering::Acquire);
                    if h == tail.load(Ordering::Acquire) {
                        break;
                    }
                    let cqe = &*Self::at::<Cqe>(self.cq, c.cqes).add((h & mask) as usize);
                    let (ud, res, flags) = (cqe.user_data, cqe.res, cqe.flags);
                    head.store(h.wrapping_add(1), Ordering::Release);
                    if ud == sqe.user_data && flags & IORING_CQE_F_NOTIF == 0 {
                        return res;
                    }
                }
            }
            // Not there yet: the next enter finds nothing new to submit and only waits.
        }
    }

    /// IORING_OP_CONNECT on the fixed socket.
    pub fn connect(&mut self, dest: SocketAddr) -> i32 {
        let (storage, len) = sockaddr(dest);
        self.run(Sqe {
            opcode: OP_CONNECT,
            addr: &storage as *const libc::sockaddr_storage as u64,
            off: len as u64,
            ..Sqe::default()
        })
    }

    /// IORING_OP_SEND, IORING_OP_SEND_ZC or IORING_OP_SENDMSG of `data` on the fixed socket.
    pub fn send(&mut self, op: u8, data: &[u8]) -> i32 {
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        // SAFETY: an all-zero msghdr is valid; the iovec outlives the submission.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        let sqe = if op == OP_SENDMSG {
            Sqe {
                opcode: op,
                addr: &msg as *const libc::msghdr as u64,
                len: 1,
                ..Sqe::default()
            }
        } else {
            Sqe {
                opcode: op,
                addr: data.as_ptr() as u64,
                len: data.len() as u32,
                ..Sqe::default()
            }
        };
        self.run(sqe)
    }
}

/// `dest` as a C socket address and its length.
pub fn sockaddr(dest: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid; the casts stay within it.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match dest {
        SocketAddr::V4(a) => {
            let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

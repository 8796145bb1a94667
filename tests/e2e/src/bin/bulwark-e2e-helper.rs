//! Workload programs the e2e tests run inside pods, where python or a shell would be too slow
//! or cannot make the system call a test needs. One binary, one subcommand per behaviour:
//!
//! - `connect IP PORT TRIES GAP_MS`: connects TRIES times, GAP_MS apart (the process lives
//!   across a policy switch); exit 0 when every attempt failed with EPERM, 10 when one got
//!   through, 11 on any other outcome.
//! - `storm COUNT PARALLEL IP PORT TRIES GAP_MS`: execs itself `connect ...` COUNT times, at
//!   most PARALLEL at once, and prints one JSON object: `{"execs", "all_eperm", "escaped",
//!   "other", "escaped_pids"}`.
//! - `udp-flood IP PORT STOP_FILE`: unconnected UDP `sendto` in a tight loop (every send is a
//!   kernel event) until STOP_FILE exists; prints `{"sent": N}`.
//! - `hop SECS IP PORT OUT`: a process that keeps forking and exiting (the child carries on,
//!   never exec'ing), trying a connect after every hop, for SECS seconds; the last one writes
//!   `{"hops", "connected", "eperm", "other"}` to OUT. The parent exits at once.
//! - `memfd-exec FILE ARGS...`: copies FILE into a `memfd_create` file and runs it with
//!   `execveat(fd, "", [FILE, ARGS...], AT_EMPTY_PATH)`: a program with no name on any
//!   filesystem (exit 12 when a step fails).
//! - `exec-via HOW FILE ARGS...`: runs FILE by another name than its path: `proc-fd`
//!   (`execve("/proc/self/fd/N")` of an `O_PATH` descriptor), `at-dir` (`execveat` with a
//!   descriptor of FILE's directory and its base name), `at-empty-path` / `at-empty-path-opath`
//!   (`execveat(fd, "", AT_EMPTY_PATH)` of an `O_RDONLY` / `O_PATH` descriptor); exit 12 when a
//!   step fails.
//! - `connect-on DIR IP PORT`: a long-lived process that, for n = 1, 2, ..., waits until
//!   `DIR/go-n` exists, tries one TCP connect (to PORT, or to the port `go-n` holds) and writes
//!   the outcome (`ok`, `EPERM`, ...) to `DIR/result-n`; it writes `DIR/ready` first and ends
//!   when `DIR/stop` exists.
//! - `uring IP PORT OP PAUSE_FILE TEXT`: a TCP socket registered as an io_uring fixed file
//!   (its descriptor closed), connected with IORING_OP_CONNECT; prints `{"connect": ...}`,
//!   waits until PAUSE_FILE exists (`-`: not at all) and sends TEXT with OP (`send`, `send-zc`,
//!   `sendmsg`; `none` sends nothing), printing `{"send": ...}`. Exit 3 when the connect failed,
//!   4 when the send did.
//! - `clone-into CGROUP_DIR IP PORT`: `clone3(CLONE_INTO_CGROUP)` a child straight into the
//!   cgroup CGROUP_DIR (no move, no exec); the child tries one TCP connect and the parent
//!   prints `{"pid": <the child's>, "cgroup": <its /proc/self/cgroup line>, "connect": "ok" |
//!   "EPERM" | ...}`.
//!   Exit 12 when clone3 or the pipe fails.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

#[path = "bulwark-e2e-helper/uring.rs"]
mod uring;

/// `connect`: every attempt refused with EPERM.
const ALL_EPERM: u8 = 0;
/// `connect`: at least one attempt connected (the rule did not hold).
const ESCAPED: u8 = 10;
/// `connect`: something else (timeout, refused, bad arguments).
const OTHER: u8 = 11;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let rest = &args[1.min(args.len())..];
    match rest.first().map(String::as_str) {
        Some("connect") => ExitCode::from(connect(&rest[1..])),
        Some("storm") => storm(&rest[1..]),
        Some("udp-flood") => udp_flood(&rest[1..]),
        Some("memfd-exec") => ExitCode::from(memfd_exec(&rest[1..])),
        Some("hop") => ExitCode::from(hop(&rest[1..])),
        Some("exec-via") => ExitCode::from(exec_via(&rest[1..])),
        Some("connect-on") => ExitCode::from(connect_on(&rest[1..])),
        Some("uring") => ExitCode::from(uring_connect_send(&rest[1..])),
        Some("syscall") => ExitCode::from(syscall(&rest[1..])),
        Some("getppid-loop") => ExitCode::from(getppid_loop(&rest[1..])),
        Some("clone-into") => ExitCode::from(clone_into(&rest[1..])),
        _ => {
            eprintln!(
                "usage: bulwark-e2e-helper connect|storm|udp-flood|hop|memfd-exec|exec-via|connect-on|uring ARGS... (see the source)"
            );
            ExitCode::from(2)
        }
    }
}

fn addr(ip: &str, port: &str) -> Option<SocketAddr> {
    Some(SocketAddr::new(
        ip.parse::<IpAddr>().ok()?,
        port.parse().ok()?,
    ))
}

fn connect(a: &[String]) -> u8 {
    let (Some(dest), Some(tries), Some(gap)) = (
        a.first().zip(a.get(1)).and_then(|(ip, p)| addr(ip, p)),
        a.get(2).and_then(|t| t.parse::<u32>().ok()),
        a.get(3).and_then(|g| g.parse::<u64>().ok()),
    ) else {
        return OTHER;
    };
    let mut outcome = ALL_EPERM;
    for i in 0..tries {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(gap));
        }
        match TcpStream::connect_timeout(&dest, Duration::from_secs(2)) {
            Ok(_) => return ESCAPED,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            Err(_) => outcome = OTHER,
        }
    }
    outcome
}

fn storm(a: &[String]) -> ExitCode {
    let (Some(count), Some(parallel)) = (
        a.first().and_then(|c| c.parse::<u32>().ok()),
        a.get(1).and_then(|p| p.parse::<u32>().ok()),
    ) else {
        eprintln!("storm COUNT PARALLEL IP PORT TRIES GAP_MS");
        return ExitCode::from(2);
    };
    let me = std::env::current_exe().expect("own path");
    let child_args = &a[2..];
    let (mut started, mut running) = (0u32, 0u32);
    let (mut all_eperm, mut escaped, mut other) = (0u32, 0u32, 0u32);
    let mut escaped_pids = Vec::new();
    while started < count || running > 0 {
        while started < count && running < parallel.max(1) {
            match Command::new(&me).arg("connect").args(child_args).spawn() {
                Ok(_) => {
                    started += 1;
                    running += 1;
                }
                Err(e) => {
                    eprintln!("spawn failed: {e}");
                    started += 1;
                    other += 1;
                }
            }
        }
        if running == 0 {
            continue;
        }
        let mut status = 0;
        // SAFETY: plain waitpid on our own children; `status` is a valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid <= 0 {
            eprintln!("waitpid: {}", std::io::Error::last_os_error());
            break;
        }
        running -= 1;
        match (libc::WIFEXITED(status), libc::WEXITSTATUS(status) as u8) {
            (true, ALL_EPERM) => all_eperm += 1,
            (true, ESCAPED) => {
                escaped += 1;
                escaped_pids.push(pid);
            }
            _ => other += 1,
        }
    }
    println!(
        "{{\"execs\":{started},\"all_eperm\":{all_eperm},\"escaped\":{escaped},\"other\":{other},\"escaped_pids\":{escaped_pids:?}}}"
    );
    ExitCode::SUCCESS
}

fn hop(a: &[String]) -> u8 {
    let (Some(secs), Some(dest), Some(out)) = (
        a.first().and_then(|s| s.parse::<f64>().ok()),
        a.get(1).zip(a.get(2)).and_then(|(ip, p)| addr(ip, p)),
        a.get(3),
    ) else {
        eprintln!("hop SECS IP PORT OUT");
        return 2;
    };
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let (mut hops, mut connected, mut eperm, mut other) = (0u64, 0u64, 0u64, 0u64);
    while Instant::now() < end {
        match TcpStream::connect_timeout(&dest, Duration::from_secs(1)) {
            Ok(_) => connected += 1,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => eperm += 1,
            Err(_) => other += 1,
        }
        // SAFETY: single-threaded here; the child only continues this loop.
        match unsafe { libc::fork() } {
            0 => hops += 1,
            child if child > 0 => unsafe { libc::_exit(0) },
            _ => other += 1,
        }
    }
    let json = format!(
        "{{\"hops\":{hops},\"connected\":{connected},\"eperm\":{eperm},\"other\":{other}}}"
    );
    let tmp = format!("{out}.tmp");
    match std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, out)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("cannot write {out}: {e}");
            12
        }
    }
}

fn memfd_exec(a: &[String]) -> u8 {
    use std::ffi::CString;
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let Some(file) = a.first() else {
        eprintln!("memfd-exec FILE ARGS...");
        return 2;
    };
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cannot read {file}: {e}");
            return 12;
        }
    };
    let name = CString::new("bulwark-e2e").expect("no NUL");
    // SAFETY: a plain syscall with a valid NUL-terminated name.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
    if fd < 0 {
        eprintln!("memfd_create: {}", std::io::Error::last_os_error());
        return 12;
    }
    // SAFETY: fd is a new descriptor owned here; kept open (by into_raw) for execveat.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    if let Err(e) = f.write_all(&bytes) {
        eprintln!("writing the memfd: {e}");
        return 12;
    }
    execveat(fd, "", a, libc::AT_EMPTY_PATH)
}

/// `execveat(dirfd, path, argv, flags)` with an empty environment; returns 12 (it only returns
/// when the exec failed).
fn execveat(dirfd: i32, path: &str, argv: &[String], flags: i32) -> u8 {
    use std::ffi::CString;
    let argv: Vec<CString> = argv
        .iter()
        .map(|s| CString::new(s.as_str()).expect("argument without NUL"))
        .collect();
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let path = CString::new(path).expect("path without NUL");
    // SAFETY: NUL-terminated path, NULL-terminated argv/envp arrays.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            dirfd,
            path.as_ptr(),
            argv_ptrs.as_ptr(),
            envp.as_ptr(),
            flags,
        )
    };
    eprintln!("execveat: {}", std::io::Error::last_os_error());
    12
}

/// `open(path, flags)` without `O_CLOEXEC` (the descriptor must survive the exec that uses it).
fn open_raw(path: &str, flags: i32) -> Option<i32> {
    let c = std::ffi::CString::new(path).ok()?;
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags) };
    if fd < 0 {
        eprintln!("open {path}: {}", std::io::Error::last_os_error());
        return None;
    }
    Some(fd)
}

fn exec_via(a: &[String]) -> u8 {
    let (Some(how), Some(file)) = (a.first(), a.get(1)) else {
        eprintln!("exec-via proc-fd|at-dir|at-empty-path|at-empty-path-opath FILE ARGS...");
        return 2;
    };
    let argv = &a[1..];
    match how.as_str() {
        "proc-fd" => {
            let Some(fd) = open_raw(file, libc::O_PATH) else {
                return 12;
            };
            execveat(libc::AT_FDCWD, &format!("/proc/self/fd/{fd}"), argv, 0)
        }
        "at-dir" => {
            let path = Path::new(file);
            let (Some(dir), Some(base)) = (
                path.parent().and_then(|d| d.to_str()),
                path.file_name().and_then(|b| b.to_str()),
            ) else {
                return 2;
            };
            let Some(fd) = open_raw(dir, libc::O_PATH | libc::O_DIRECTORY) else {
                return 12;
            };
            execveat(fd, base, argv, 0)
        }
        "at-empty-path" | "at-empty-path-opath" => {
            let flags = if how == "at-empty-path" {
                libc::O_RDONLY
            } else {
                libc::O_PATH
            };
            let Some(fd) = open_raw(file, flags) else {
                return 12;
            };
            execveat(fd, "", argv, libc::AT_EMPTY_PATH)
        }
        _ => 2,
    }
}

/// Waits (polling, up to `limit`) until `path` exists.
fn wait_path(path: &Path, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while !path.exists() {
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Name of an errno value as the tests print it.
fn errno_name(e: i32) -> String {
    match e {
        libc::EPERM => "EPERM".into(),
        libc::EACCES => "EACCES".into(),
        libc::ECONNREFUSED => "ECONNREFUSED".into(),
        libc::ETIMEDOUT => "ETIMEDOUT".into(),
        libc::ECONNRESET => "ECONNRESET".into(),
        libc::EPIPE => "EPIPE".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::EOPNOTSUPP => "EOPNOTSUPP".into(),
        _ => format!("errno {e}"),
    }
}

fn connect_on(a: &[String]) -> u8 {
    let (Some(dir), Some(dest)) = (
        a.first().map(Path::new),
        a.get(1).zip(a.get(2)).and_then(|(ip, p)| addr(ip, p)),
    ) else {
        eprintln!("connect-on DIR IP PORT");
        return 2;
    };
    if std::fs::write(dir.join("ready"), std::process::id().to_string()).is_err() {
        return 12;
    }
    for n in 1.. {
        let go = dir.join(format!("go-{n}"));
        // A safety net only: the test says when to go and when to stop.
        let end = Instant::now() + Duration::from_secs(300);
        while !go.exists() {
            if dir.join("stop").exists() || Instant::now() > end {
                return 0;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut to = dest;
        if let Some(port) = std::fs::read_to_string(&go)
            .ok()
            .and_then(|p| p.trim().parse().ok())
        {
            to.set_port(port);
        }
        let outcome = match TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
            Ok(_) => "ok".to_string(),
            Err(e) => errno_name(e.raw_os_error().unwrap_or(0)),
        };
        let tmp = dir.join(format!("result-{n}.tmp"));
        if std::fs::write(&tmp, outcome)
            .and_then(|()| std::fs::rename(&tmp, dir.join(format!("result-{n}"))))
            .is_err()
        {
            return 12;
        }
    }
    0
}

/// `clone3(2)` flag: put the child in the cgroup `clone_args.cgroup` names (Linux 5.7).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` of `clone3(2)` (the fields up to `cgroup`, CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

fn clone_into(a: &[String]) -> u8 {
    let (Some(cgroup_dir), Some(dest)) = (
        a.first(),
        a.get(1).zip(a.get(2)).and_then(|(ip, p)| addr(ip, p)),
    ) else {
        eprintln!("clone-into CGROUP_DIR IP PORT");
        return 2;
    };
    let dir = match std::fs::File::open(cgroup_dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("clone-into: open {cgroup_dir}: {e}");
            return 12;
        }
    };
    let mut pipe = [0i32; 2];
    if unsafe { libc::pipe(pipe.as_mut_ptr()) } != 0 {
        return 12;
    }
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: std::os::fd::AsRawFd::as_raw_fd(&dir) as u64,
        ..CloneArgs::default()
    };
    // SAFETY: a fork-like clone3 (no CLONE_VM, no new stack) of this single-threaded process;
    // the child only reads a file, connects, writes to the pipe and _exits.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid < 0 {
        eprintln!("clone3: {}", std::io::Error::last_os_error());
        return 12;
    }
    if pid == 0 {
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let outcome = match TcpStream::connect_timeout(&dest, Duration::from_secs(2)) {
            Ok(_) => "ok".to_string(),
            Err(e) => errno_name(e.raw_os_error().unwrap_or(0)),
        };
        let line = serde_json::json!({
            "pid": std::process::id(),
            "cgroup": cgroup.trim(),
            "connect": outcome,
        })
        .to_string();
        unsafe {
            libc::write(pipe[1], line.as_ptr().cast(), line.len());
            libc::_exit(0);
        }
    }
    unsafe { libc::close(pipe[1]) };
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let n = unsafe { libc::read(pipe[0], buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    let mut status = 0;
    unsafe { libc::waitpid(pid as i32, &mut status, 0) };
    println!("{}", String::from_utf8_lossy(&out));
    if out.is_empty() {
        12
    } else {
        0
    }
}

fn uring_connect_send(a: &[String]) -> u8 {
    let (Some(dest), Some(op), Some(pause), Some(text)) = (
        a.first().zip(a.get(1)).and_then(|(ip, p)| addr(ip, p)),
        a.get(2),
        a.get(3),
        a.get(4),
    ) else {
        eprintln!("uring IP PORT send|send-zc|sendmsg|none PAUSE_FILE TEXT");
        return 2;
    };
    let op = match op.as_str() {
        "send" => Some(uring::OP_SEND),
        "send-zc" => Some(uring::OP_SEND_ZC),
        "sendmsg" => Some(uring::OP_SENDMSG),
        _ => None,
    };
    let family = if dest.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket and close calls.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM, 0) };
    if fd < 0 {
        eprintln!("socket: {}", std::io::Error::last_os_error());
        return 12;
    }
    let mut ring = match uring::Ring::with_fixed_socket(fd) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return 12;
        }
    };
    // Only the ring holds the socket now.
    unsafe { libc::close(fd) };
    let r = ring.connect(dest);
    let connect = if r == 0 { "ok".into() } else { errno_name(-r) };
    println!("{{\"connect\":\"{connect}\"}}");
    if r != 0 {
        return 3;
    }
    if pause != "-" && !wait_path(Path::new(pause), Duration::from_secs(120)) {
        return 12;
    }
    let Some(op) = op else {
        return 0;
    };
    let r = ring.send(op, text.as_bytes());
    let send = if r >= 0 { "ok".into() } else { errno_name(-r) };
    println!("{{\"send\":\"{send}\"}}");
    if r < 0 {
        4
    } else {
        0
    }
}

fn udp_flood(a: &[String]) -> ExitCode {
    let (Some(dest), Some(stop)) = (
        a.first().zip(a.get(1)).and_then(|(ip, p)| addr(ip, p)),
        a.get(2),
    ) else {
        eprintln!("udp-flood IP PORT STOP_FILE");
        return ExitCode::from(2);
    };
    let bind: SocketAddr = if dest.is_ipv4() {
        "0.0.0.0:0".parse().expect("v4 any")
    } else {
        "[::]:0".parse().expect("v6 any")
    };
    let sock = UdpSocket::bind(bind).expect("bind a UDP socket");
    let stop = Path::new(stop);
    // A safety net only: the test creates the stop file.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut sent = 0u64;
    loop {
        for _ in 0..4096 {
            match sock.send_to(b"flood", dest) {
                Ok(_) => sent += 1,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {}
            }
        }
        if stop.exists() || Instant::now() > deadline {
            break;
        }
    }
    println!("{{\"sent\":{sent}}}");
    ExitCode::SUCCESS
}

/// `syscall <ptrace|mount|unshare|unshare-int80> MARKER`: makes that call (harmless: ptrace
/// `PTRACE_TRACEME`, a mount on a path that does not exist, `unshare(CLONE_NEWUTS)`; the
/// `-int80` form through the i386 entry `int 0x80` from this 64-bit process), then prints the
/// call's result as JSON and writes MARKER, so a test sees whether the process lived past the
/// call's return.
fn syscall(args: &[String]) -> u8 {
    let (Some(what), Some(marker)) = (args.first(), args.get(1)) else {
        eprintln!("usage: syscall <ptrace|mount|unshare|unshare-int80> MARKER");
        return 2;
    };
    const CLONE_NEWUTS: libc::c_ulong = 0x0400_0000;
    let ret: i64 = match what.as_str() {
        "ptrace" => unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) },
        "mount" => {
            let src = c"none";
            let target = c"/nonexistent/bulwark-e2e";
            let fstype = c"tmpfs";
            unsafe {
                libc::mount(
                    src.as_ptr(),
                    target.as_ptr(),
                    fstype.as_ptr(),
                    0,
                    std::ptr::null(),
                )
            }
            .into()
        }
        "unshare" => unsafe { libc::unshare(CLONE_NEWUTS as libc::c_int) }.into(),
        #[cfg(target_arch = "x86_64")]
        "unshare-int80" => {
            // i386 `unshare` is 310; the 32-bit entry returns -errno in eax.
            let mut eax: u32 = 310;
            // rbx belongs to LLVM: swap the argument in and out around the trap.
            unsafe {
                std::arch::asm!(
                    "xchg {b:e}, ebx",
                    "int 0x80",
                    "xchg {b:e}, ebx",
                    b = inout(reg) CLONE_NEWUTS as u32 => _,
                    inout("eax") eax,
                )
            };
            i64::from(eax as i32)
        }
        other => {
            eprintln!("unknown call {other}");
            return 2;
        }
    };
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    println!(r#"{{"call":"{what}","ret":{ret},"errno":{errno}}}"#);
    match std::fs::write(marker, what) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// `getppid-loop N`: N getppid calls; prints the nanoseconds per call (a syscall-cost probe).
fn getppid_loop(args: &[String]) -> u8 {
    let n: u64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let start = std::time::Instant::now();
    for _ in 0..n {
        unsafe { libc::getppid() };
    }
    println!("{:.1}", start.elapsed().as_nanos() as f64 / n as f64);
    0
}

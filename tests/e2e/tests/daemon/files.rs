//! `hook: file` with real processes (cat, sh, python, a small C program): a protected file read
//! by any route — `../..`, a symlink, a hard link, `openat` with a dirfd, `/proc/self/fd/N` after
//! an `O_PATH` open, `open_by_handle_at`, a bind mount, a 32-bit `int 0x80` open — kills the reader
//! at the open's exit, before a byte of the file reaches user space (what it pipes on is empty);
//! the events carry the path the kernel used and the descriptor. Calls judged at entry (unlink,
//! rename, chmod) kill the caller but their effect happens, as docs/files.md says. io_uring's
//! requests (which make no system call) are judged too: opens at their completion, or killed at
//! submission where a completion cannot judge them; unlink and rename by name at submission.

use bulwark_e2e::daemon::ev;
use bulwark_e2e::{preflight, serial, Daemon, DaemonConfig, Event, PinDir, RunOutput, World};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the protected file holds: it must never show up in anything a killed reader wrote.
const SECRET: &str = "TOP-SECRET-7f3a9c\n";

/// A small C program: reads a file by the route `MODE` names and writes what it read to
/// stdout. Built with `cc -no-pie` so its static path buffer has a 32-bit address (`int80`).
const PROBE_C: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/io_uring.h>
#include <linux/openat2.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>

static char path32[4096];

static int dump(int fd) {
    char buf[4096];
    ssize_t n;
    if (fd < 0) { perror("open"); return 3; }
    while ((n = read(fd, buf, sizeof buf)) > 0) write(1, buf, n);
    return 0;
}

/* A minimal io_uring (no liburing): requests are made without the system calls they stand
   for. A failed setup prints "io_uring_setup" (the test tells "unavailable" by it). */
struct ring { int fd; struct io_uring_params p; char *sq, *cq; struct io_uring_sqe *sqes; };

static int ring_init(struct ring *r, unsigned flags) {
    memset(r, 0, sizeof *r);
    r->p.flags = flags;
    r->fd = syscall(__NR_io_uring_setup, 4, &r->p);
    if (r->fd < 0) { perror("io_uring_setup"); return -1; }
    size_t sq_len = r->p.sq_off.array + r->p.sq_entries * sizeof(unsigned);
    size_t cq_len = r->p.cq_off.cqes + r->p.cq_entries * sizeof(struct io_uring_cqe);
    r->sq = mmap(0, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
    r->cq = mmap(0, cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_CQ_RING);
    r->sqes = mmap(0, r->p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
    if (r->sq == MAP_FAILED || r->cq == MAP_FAILED || r->sqes == MAP_FAILED) { perror("io_uring_setup mmap"); return -1; }
    return 0;
}

/* The next submission entry, zeroed and queued. */
static struct io_uring_sqe *ring_sqe(struct ring *r) {
    unsigned tail = *(unsigned *)(r->sq + r->p.sq_off.tail);
    unsigned idx = tail & *(unsigned *)(r->sq + r->p.sq_off.ring_mask);
    struct io_uring_sqe *e = &r->sqes[idx];
    memset(e, 0, sizeof *e);
    ((unsigned *)(r->sq + r->p.sq_off.array))[idx] = idx;
    __atomic_store_n((unsigned *)(r->sq + r->p.sq_off.tail), tail + 1, __ATOMIC_RELEASE);
    return e;
}

/* Submits `submit` queued requests (on an SQPOLL ring: wakes the kernel thread that submits
   them); with `wait`, returns the result of the next completion. The kernel waits only when
   it submitted all `submit`: 0 to only wait. */
static int ring_submit(struct ring *r, unsigned submit, int wait) {
    unsigned flags = (wait ? IORING_ENTER_GETEVENTS : 0) | (r->p.flags & IORING_SETUP_SQPOLL ? IORING_ENTER_SQ_WAKEUP : 0);
    if (syscall(__NR_io_uring_enter, r->fd, submit, wait, flags, 0, 0) < 0) { perror("io_uring_enter"); return -1; }
    if (!wait) return 0;
    unsigned *headp = (unsigned *)(r->cq + r->p.cq_off.head);
    unsigned head = *headp;
    struct io_uring_cqe *c = (struct io_uring_cqe *)(r->cq + r->p.cq_off.cqes) + (head & *(unsigned *)(r->cq + r->p.cq_off.ring_mask));
    int res = c->res;
    __atomic_store_n(headp, head + 1, __ATOMIC_RELEASE);
    return res;
}

/* Submits the one queued request; with `wait`, returns the result of the next completion. */
static int ring_enter(struct ring *r, int wait) {
    return ring_submit(r, 1, wait);
}

/* A queued IORING_OP_OPENAT of `path` (relative to the working directory). */
static struct io_uring_sqe *queue_openat(struct ring *r, const char *path) {
    struct io_uring_sqe *e = ring_sqe(r);
    e->opcode = IORING_OP_OPENAT;
    e->fd = AT_FDCWD;
    e->addr = (unsigned long)path;
    return e;
}

/* The descriptor the next open gets. */
static int lowest_free_fd(void) {
    int fd = dup(0);
    close(fd);
    return fd;
}

/* IORING_OP_OPENAT of `path` on a ring set up with `flags`, `sqe_flags` on the request. */
static int uring_open(struct ring *r, unsigned flags, unsigned sqe_flags, unsigned file_index, const char *path) {
    if (ring_init(r, flags) < 0) return -1;
    struct io_uring_sqe *e = queue_openat(r, path);
    e->open_flags = O_RDONLY;
    e->flags = sqe_flags;
    e->file_index = file_index;
    return ring_enter(r, !(sqe_flags & IOSQE_CQE_SKIP_SUCCESS));
}

/* A request naming `path` (and `path2`) relative to the working directory: unlinkat, mkdirat
   (mode 0755), renameat and linkat (`path` to `path2`), symlinkat (`path2` pointing to `path`). */
static int uring_name_op(int op, const char *path, const char *path2) {
    struct ring r;
    if (ring_init(&r, 0) < 0) return -1;
    struct io_uring_sqe *e = ring_sqe(&r);
    e->opcode = op;
    e->fd = AT_FDCWD;
    e->addr = (unsigned long)path;
    if (op == IORING_OP_MKDIRAT) e->len = 0755;
    if (path2) {
        e->addr2 = (unsigned long)path2;
        if (op != IORING_OP_SYMLINKAT) e->len = AT_FDCWD;
    }
    return ring_enter(&r, 1);
}

/* Linux 6.9's opcode: newer than the headers of some distributions. */
#define URING_OP_FTRUNCATE 55

/* IORING_OP_FTRUNCATE of `fd` (or of registered file 0 with `fixed`) to length 0. */
static int uring_ftruncate(int fd, int fixed) {
    struct ring r;
    if (ring_init(&r, 0) < 0) return -1;
    if (fixed && syscall(__NR_io_uring_register, r.fd, IORING_REGISTER_FILES, &fd, 1) < 0) { perror("io_uring_register"); return -1; }
    struct io_uring_sqe *e = ring_sqe(&r);
    e->opcode = URING_OP_FTRUNCATE;
    e->fd = fixed ? 0 : fd;
    e->flags = fixed ? IOSQE_FIXED_FILE : 0;
    return ring_enter(&r, 1);
}

/* The name requests by mode. */
static const struct { const char *mode; int op; } name_ops[] = {
    {"uring-unlink", IORING_OP_UNLINKAT}, {"uring-rename", IORING_OP_RENAMEAT},
    {"uring-mkdir", IORING_OP_MKDIRAT}, {"uring-symlink", IORING_OP_SYMLINKAT},
    {"uring-link", IORING_OP_LINKAT},
};

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *mode = argv[1], *path = argv[2];
    if (!strcmp(mode, "at-dir")) {
        /* openat(dirfd, name): argv[2] is the directory, argv[3] the name in it. */
        int dir = open(path, O_RDONLY | O_DIRECTORY);
        if (dir < 0) { perror("open dir"); return 3; }
        return dump(openat(dir, argv[3], O_RDONLY));
    }
    if (!strcmp(mode, "proc-fd")) {
        int o = open(path, O_PATH);
        if (o < 0) { perror("O_PATH"); return 3; }
        printf("opath-ok\n"); fflush(stdout);
        char again[64];
        snprintf(again, sizeof again, "/proc/self/fd/%d", o);
        return dump(open(again, O_RDONLY));
    }
    if (!strcmp(mode, "handle")) {
        struct file_handle *h = malloc(sizeof *h + MAX_HANDLE_SZ);
        h->handle_bytes = MAX_HANDLE_SZ;
        int mount_id;
        if (name_to_handle_at(AT_FDCWD, path, h, &mount_id, 0) < 0) { perror("name_to_handle_at"); return 3; }
        int m = open(argv[3], O_RDONLY | O_DIRECTORY);
        return dump(syscall(__NR_open_by_handle_at, m, h, O_RDONLY));
    }
    if (!strcmp(mode, "int80")) {
        /* The i386 open (5) through int 0x80 from this 64-bit process. */
        strncpy(path32, path, sizeof path32 - 1);
        long fd;
        __asm__ volatile ("int $0x80" : "=a"(fd) : "a"(5), "b"(path32), "c"(O_RDONLY) : "memory");
        return dump((int)fd);
    }
    struct ring r;
    if (!strcmp(mode, "uring")) return dump(uring_open(&r, 0, 0, 0, path));
    /* Completions posted by the submitter when it next waits. */
    if (!strcmp(mode, "uring-defer"))
        return dump(uring_open(&r, IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN, 0, 0, path));
    /* No completion on success: the descriptor is the lowest free one. */
    if (!strcmp(mode, "uring-skip")) {
        if (uring_open(&r, 0, IOSQE_CQE_SKIP_SUCCESS, 0, path) < 0) return 3;
        int fd = r.fd + 1;
        return dump(fd);
    }
    /* Into fixed-file slot 0 (a direct descriptor), read from there. */
    if (!strcmp(mode, "uring-direct")) {
        int sparse[1] = {-1};
        if (ring_init(&r, 0) < 0) return 3;
        if (syscall(__NR_io_uring_register, r.fd, IORING_REGISTER_FILES, sparse, 1) < 0) { perror("io_uring_register"); return 3; }
        struct io_uring_sqe *e = queue_openat(&r, path);
        e->file_index = 1;
        int res = ring_enter(&r, 1);
        if (res < 0) { fprintf(stderr, "direct open: %d\n", res); return 3; }
        static char buf[4096];
        e = ring_sqe(&r);
        e->opcode = IORING_OP_READ;
        e->flags = IOSQE_FIXED_FILE;
        e->fd = 0;
        e->addr = (unsigned long)buf;
        e->len = sizeof buf;
        int n = ring_enter(&r, 1);
        if (n > 0) write(1, buf, n);
        return 0;
    }
    /* The kernel's SQPOLL thread of this process submits the open. */
    if (!strcmp(mode, "uring-sqpoll")) return dump(uring_open(&r, IORING_SETUP_SQPOLL, 0, 0, path));
    if (!strcmp(mode, "uring-openat2")) {
        struct open_how how = { .flags = O_RDONLY };
        if (ring_init(&r, 0) < 0) return 3;
        struct io_uring_sqe *e = ring_sqe(&r);
        e->opcode = IORING_OP_OPENAT2;
        e->fd = AT_FDCWD;
        e->addr = (unsigned long)path;
        e->len = sizeof how;
        e->addr2 = (unsigned long)&how;
        return dump(ring_enter(&r, 1));
    }
    /* Requests queued behind an open of `path` in one submission, reading the descriptor it
       will get (the lowest free one) and passing what they read on to stdout (a pipe), by
       variant argv[3]:
       "read"   OPENAT, READ, WRITE to stdout;
       "link"   the same three linked (IOSQE_IO_HARDLINK: a short read does not end the chain);
       "fixed"  OPENAT, READ_FIXED into a registered buffer, WRITE to stdout;
       "splice" OPENAT, SPLICE from the descriptor to stdout;
       "send"   OPENAT, READ, SEND on a socketpair whose other end a child copies to stdout;
       "async"  OPENAT with IOSQE_ASYNC (io-wq opens it) submitted alone, then, as soon as the
                descriptor exists, READ and WRITE to stdout in a second submission. */
    if (!strcmp(mode, "uring-batch")) {
        static char buf[64];
        const char *variant = argc > 3 ? argv[3] : "read";
        int link = !strcmp(variant, "link") ? IOSQE_IO_HARDLINK : 0, out = 1;
        if (ring_init(&r, 0) < 0) return 3;
        if (!strcmp(variant, "fixed")) {
            struct iovec iov = { buf, sizeof buf };
            if (syscall(__NR_io_uring_register, r.fd, IORING_REGISTER_BUFFERS, &iov, 1) < 0) { perror("io_uring_register"); return 3; }
        }
        if (!strcmp(variant, "send")) {
            int sv[2];
            if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) { perror("socketpair"); return 3; }
            if (fork() == 0) {
                ssize_t n;
                close(sv[0]);
                while ((n = read(sv[1], buf, sizeof buf)) > 0) write(1, buf, n);
                _exit(0);
            }
            close(sv[1]);
            out = sv[0];
        }
        int next = lowest_free_fd();
        struct io_uring_sqe *e = queue_openat(&r, path);
        e->flags = link;
        int queued = 1;
        if (!strcmp(variant, "async")) {
            e->flags = IOSQE_ASYNC;
            if (syscall(__NR_io_uring_enter, r.fd, 1, 0, 0, 0, 0) < 0) { perror("io_uring_enter"); return 3; }
            for (long spins = 0; fcntl(next, F_GETFD) < 0; spins++)
                if (spins > 100000000L) { fprintf(stderr, "no descriptor\n"); return 3; }
            queued = 0;
        }
        e = ring_sqe(&r);
        if (!strcmp(variant, "splice")) {
            e->opcode = IORING_OP_SPLICE;
            e->fd = 1;
            e->splice_fd_in = next;
            e->splice_off_in = (unsigned long long)-1;
            e->off = (unsigned long long)-1;
            e->len = sizeof buf;
            queued++;
        } else {
            e->opcode = !strcmp(variant, "fixed") ? IORING_OP_READ_FIXED : IORING_OP_READ;
            e->fd = next;
            e->addr = (unsigned long)buf;
            e->len = sizeof buf;
            e->flags = link;
            e = ring_sqe(&r);
            e->opcode = out == 1 ? IORING_OP_WRITE : IORING_OP_SEND;
            e->fd = out;
            e->addr = (unsigned long)buf;
            e->len = sizeof buf;
            queued += 2;
        }
        unsigned waits = queued + !strcmp(variant, "async");
        if (syscall(__NR_io_uring_enter, r.fd, queued, waits, IORING_ENTER_GETEVENTS, 0, 0) < 0) { perror("io_uring_enter"); return 3; }
        if (out != 1) { close(out); wait(0); }
        return 0;
    }
    /* An open whose completion the full completion queue cannot take (it overflows, with no
       io_uring_complete): the queue filled with NOP completions left unread, then OPENAT of
       `path` alone, then its descriptor read with read(2). */
    if (!strcmp(mode, "uring-overflow")) {
        if (ring_init(&r, 0) < 0) return 3;
        for (unsigned n = 0; n < r.p.cq_entries; n += r.p.sq_entries) {
            for (unsigned k = 0; k < r.p.sq_entries; k++) ring_sqe(&r)->opcode = IORING_OP_NOP;
            if (syscall(__NR_io_uring_enter, r.fd, r.p.sq_entries, 0, 0, 0, 0) < 0) { perror("io_uring_enter"); return 3; }
        }
        int next = lowest_free_fd();
        queue_openat(&r, path);
        if (syscall(__NR_io_uring_enter, r.fd, 1, 0, 0, 0, 0) < 0) { perror("io_uring_enter"); return 3; }
        return dump(next);
    }
    for (size_t i = 0; i < sizeof name_ops / sizeof name_ops[0]; i++) {
        if (strcmp(mode, name_ops[i].mode)) continue;
        int res = uring_name_op(name_ops[i].op, path, argc > 3 ? argv[3] : 0);
        printf("after %d\n", res);
        return res < 0;
    }
    /* An open held in flight across rule changes: a READ of FIFO argv[3] (opened O_RDWR, so
       the open does not wait for a writer), hard-linked to an OPENAT of `path`, submitted
       together; says "held", then waits for both completions and reads the open's descriptor
       with read(2). The OPENAT is submitted now and issued when the test writes to the FIFO. */
    if (!strcmp(mode, "uring-held")) {
        static char gate[1];
        int fifo = open(argv[3], O_RDWR);
        if (fifo < 0) { perror("open fifo"); return 3; }
        if (ring_init(&r, 0) < 0) return 3;
        struct io_uring_sqe *e = ring_sqe(&r);
        e->opcode = IORING_OP_READ;
        e->fd = fifo;
        e->addr = (unsigned long)gate;
        e->len = 1;
        e->flags = IOSQE_IO_HARDLINK;
        e = queue_openat(&r, path);
        e->open_flags = O_RDONLY;
        if (ring_submit(&r, 2, 0) < 0) return 3;
        printf("held\n"); fflush(stdout);
        /* A link completes in order: the READ's completion, then the OPENAT's (its descriptor). */
        if (ring_submit(&r, 0, 1) < 0) return 3;
        return dump(ring_submit(&r, 0, 1));
    }
    /* Opens `path` for writing, says "opened", waits until file argv[3] exists (the test
       loads the policy meanwhile), then truncates it through io_uring; with "fixed" as
       argv[4], through the ring's registered file. */
    if (!strcmp(mode, "uring-ftruncate")) {
        int fd = open(path, O_RDWR);
        if (fd < 0) { perror("open"); return 3; }
        printf("opened\n"); fflush(stdout);
        while (access(argv[3], F_OK)) usleep(1000);
        int res = uring_ftruncate(fd, argc > 4 && !strcmp(argv[4], "fixed"));
        printf("after %d\n", res);
        return res < 0;
    }
    return 2;
}
"#;

/// Builds the C probe into the world's directory (fails loudly without a C compiler: add
/// `gcc` with scripts/bootstrap.sh).
fn build_probe(w: &World) -> PathBuf {
    let cc = bulwark_e2e::preflight::which("cc")
        .expect("`cc` not found on PATH: the file hook's C probe needs it (apt-get install gcc)");
    let src = w.dir().join("probe.c");
    std::fs::write(&src, PROBE_C).unwrap();
    let bin = w.dir().join("probe");
    let out = Command::new(cc)
        .args(["-O1", "-no-pie", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// The world's protected directory with `secret` in it (and a `decoy` beside it).
fn protected_dir(w: &World) -> PathBuf {
    let dir = w.dir().join("vault");
    std::fs::create_dir_all(dir.join("a/b")).unwrap();
    std::fs::write(dir.join("secret"), SECRET).unwrap();
    std::fs::write(dir.join("decoy"), "decoy\n").unwrap();
    dir
}

fn policy(name: &str, ns: &str, paths: &str, access: &str, action: &str) -> String {
    policy_of(name, &[(ns, paths, access, action)])
}

/// A policy whose one file rule has a selector per (namespace, paths, access, action).
fn policy_of(name: &str, selectors: &[(&str, &str, &str, &str)]) -> String {
    let mut yaml = format!(
        "apiVersion: bulwark.dev/v1alpha1
kind: TracingPolicy
metadata:
  name: {name}
spec:
  rules:
    - name: guard
      hook: file
      selectors:
"
    );
    for (ns, paths, access, action) in selectors {
        yaml += &format!(
            "        - matchNamespaces: [{{operator: In, values: [{ns}]}}]
          matchPaths: [{paths}]
          matchAccess: [{{operator: In, values: [{access}]}}]
          matchActions: [{{action: {action}}}]
"
        );
    }
    yaml
}

/// Starts the daemon with the one guard policy [`policy`] makes (Sigkill).
fn start(w: &World, name: &str, paths: &str, access: &str) -> Daemon {
    let yaml = policy(name, "e2e-file", paths, access, "Sigkill");
    Daemon::start(w, &[(&format!("{name}.yaml"), &yaml)])
}

/// The `process_file` event of process `pid` on `path` (by the kernel's path).
fn wait_file(d: &Daemon, pid: u64, what: &str) -> Event {
    d.wait_event(&format!("process_file of pid {pid} ({what})"), |e| {
        ev::is(e, "process_file") && ev::pid(e) == Some(pid)
    })
}

/// The reader of `out` was killed at its open of the protected file: no byte of it got out,
/// and the events name the file and the kill.
fn assert_read_killed(
    d: &Daemon,
    out: &RunOutput,
    policy: &str,
    secret: &Path,
    route: &str,
) -> Event {
    assert!(
        out.sigkilled(),
        "{route}: the reader should be SIGKILLed: {out}"
    );
    assert!(
        !out.stdout.contains("TOP-SECRET"),
        "{route}: the secret got out: {out}"
    );
    let pid = out.pid as u64;
    let e = wait_file(d, pid, route);
    assert_eq!(
        e["file"]["access"],
        serde_json::json!(["read"]),
        "{route}: {e}"
    );
    assert!(
        e["file"]["return_value"].as_i64().is_some_and(|fd| fd >= 0),
        "{route}: {e}"
    );
    let m = d.wait_event(&format!("policy_match of {route}"), |m| {
        ev::is_match(m, policy, "file") && ev::pid(m) == Some(pid)
    });
    assert_eq!(
        (&m["outcome"], &m["enforced"]),
        (&"killed".into(), &true.into()),
        "{route}: {m}"
    );
    assert_eq!(
        ev::exec_id(&m),
        ev::exec_id(&e),
        "{route}: correlated by exec_id"
    );
    assert_eq!(
        m["file"], e["file"],
        "{route}: the match carries the access it killed"
    );
    let _ = secret;
    e
}

fn meta(p: &Path) -> std::fs::Metadata {
    std::fs::metadata(p).unwrap()
}

#[test]
fn file_read_is_killed_before_a_byte_gets_out() {
    let _g = serial();
    let w = World::single("file-read", "e2e-file");
    let dir = protected_dir(&w);
    let secret = dir.join("secret");
    let s = secret.to_str().unwrap();
    let name = "e2e-file-read";
    let d = start(
        &w,
        name,
        &format!("{{operator: In, values: [{s}]}}"),
        "read",
    );
    let cat = bulwark_e2e::preflight::which("cat").expect("cat");
    let sh = &preflight().sh;
    let python = &preflight().python3;

    // cat: killed at openat's exit; its stdout (a file) holds nothing.
    let out = w.pod().run(&[cat.to_str().unwrap(), s]);
    let e = assert_read_killed(&d, &out, name, &secret, "cat");
    assert_eq!(e["file"]["path"], s, "{e}");
    let m = d.wait_event("cat's policy_match", |m| {
        ev::is_match(m, name, "file") && ev::pid(m) == Some(out.pid as u64)
    });
    assert_eq!(
        m["file"]["path"], s,
        "the match names the protected file: {m}"
    );
    assert_eq!(e["file"]["path_resolved"], true, "{e}");
    assert_eq!(e["file"]["syscall"], "openat", "{e}");
    assert_eq!(e["file"]["inode"], meta(&secret).ino(), "{e}");

    // Through a pipe: the reader at the other end gets 0 bytes, the pipeline goes on.
    for (what, reader) in [
        ("cat", format!("{} {s}", cat.display())),
        (
            "python",
            format!(
                "{} -c 'import sys; sys.stdout.write(open(\"{s}\").read())'",
                python.display()
            ),
        ),
    ] {
        let got = w.dir().join(format!("piped-{what}"));
        let script = format!("{reader} | cat > {}; echo pipeline-done", got.display());
        let out = w.pod().run(&[sh.to_str().unwrap(), "-c", &script]);
        assert!(out.stdout.contains("pipeline-done"), "{what}: {out}");
        assert_eq!(
            std::fs::read(&got).unwrap().len(),
            0,
            "{what}: the reader got bytes of the secret"
        );
        let m = d.wait_event(&format!("policy_match of piped {what}"), |m| {
            ev::is_match(m, name, "file")
                && m["process"]["arguments"]
                    .as_str()
                    .is_some_and(|a| a.contains(s))
                && ev::binary(m).contains(what)
        });
        assert_eq!(m["outcome"], "killed", "{m}");
    }
    // bash reading it with a redirection: the shell itself is killed.
    let bash = bulwark_e2e::preflight::which("bash").expect("bash");
    let out = w.pod().run(&[
        bash.to_str().unwrap(),
        "-c",
        &format!("read l < {s}; echo \"$l\""),
    ]);
    assert_read_killed(&d, &out, name, &secret, "bash redirection");

    // The file beside it, and the secret's metadata, are not reads of it.
    let out = w
        .pod()
        .run(&[cat.to_str().unwrap(), dir.join("decoy").to_str().unwrap()]);
    assert!(out.success() && out.stdout == "decoy\n", "{out}");
    let out = w.pod().run(&[
        sh.to_str().unwrap(),
        "-c",
        &format!("test -r {s} && ls -l {s} >/dev/null && echo stat-ok"),
    ]);
    assert!(out.success() && out.stdout.contains("stat-ok"), "{out}");
    // A host process (no pod) is not this policy's.
    let host = Command::new(&cat).arg(s).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&host.stdout), SECRET);
}

/// `Postfix` and `Prefix` compare the opened file's path byte for byte (the kernel reverses the
/// path for the postfix trie several bytes at a time): postfixes shorter and longer than one
/// step match, a path one byte off before the postfix or after the prefix does not.
#[test]
fn file_postfix_and_prefix_match_the_opened_path() {
    let _g = serial();
    let w = World::single("file-affix", "e2e-file");
    let dir = protected_dir(&w);
    let pem = dir.join("id.pem");
    let long = dir.join("a/longer-name-secret.key");
    let deep = dir.join("a/b/deep");
    for f in [&pem, &long, &deep] {
        std::fs::write(f, SECRET).unwrap();
    }
    let near = [
        dir.join("id.pem.bak"),
        dir.join("a/xlonger-name-secret.key"),
        dir.join("a/bb"),
    ];
    for f in &near {
        std::fs::write(f, "near\n").unwrap();
    }
    let prefix = format!("{}/", dir.join("a/b").display());
    let (post, pre) = ("e2e-file-postfix", "e2e-file-prefix");
    let policies = [
        (
            post,
            "{operator: Postfix, values: [.pem, /a/longer-name-secret.key]}".to_string(),
        ),
        (pre, format!("{{operator: Prefix, values: [{prefix}]}}")),
    ]
    .map(|(name, paths)| {
        (
            format!("{name}.yaml"),
            policy(name, "e2e-file", &paths, "read", "Sigkill"),
        )
    });
    let d = Daemon::start(
        &w,
        &[
            (&policies[0].0, &policies[0].1),
            (&policies[1].0, &policies[1].1),
        ],
    );
    let cat = bulwark_e2e::preflight::which("cat").expect("cat");
    let cat = cat.to_str().unwrap();
    for (file, name) in [(&pem, post), (&long, post), (&deep, pre)] {
        let f = file.to_str().unwrap();
        let out = w.pod().run(&[cat, f]);
        let e = assert_read_killed(&d, &out, name, file, f);
        assert_eq!(e["file"]["path"], f, "{e}");
    }
    for f in &near {
        let out = w.pod().run(&[cat, f.to_str().unwrap()]);
        assert!(
            out.success() && out.stdout == "near\n",
            "{}: {out}",
            f.display()
        );
    }
}

#[test]
fn file_the_path_actually_used_is_judged() {
    let _g = serial();
    let w = World::single("file-routes", "e2e-file");
    let dir = protected_dir(&w);
    let secret = dir.join("secret");
    let s = secret.to_str().unwrap();
    // A hard link made before the rules were loaded (its path is nowhere in the policy).
    let early = w.dir().join("early-link");
    std::fs::hard_link(&secret, &early).unwrap();
    std::os::unix::fs::symlink(&secret, w.dir().join("sym")).unwrap();
    let probe = build_probe(&w);
    let name = "e2e-file-routes";
    let d = start(
        &w,
        name,
        &format!("{{operator: In, values: [{s}]}}"),
        "read",
    );
    let cat = bulwark_e2e::preflight::which("cat").expect("cat");
    let sh = preflight().sh.to_str().unwrap().to_string();
    let cat = cat.to_str().unwrap();
    let p = probe.to_str().unwrap();
    let at_b = dir.join("a/b");

    // `../..` from another directory, a symlink, openat with a dirfd: the path is the file's.
    let routes: Vec<(&str, Vec<String>)> = vec![
        (
            "dot-dot",
            vec![
                sh.clone(),
                "-c".into(),
                format!("cd {} && exec {cat} ../../secret", at_b.display()),
            ],
        ),
        (
            "symlink",
            vec![cat.into(), w.dir().join("sym").display().to_string()],
        ),
        (
            "openat-dirfd",
            vec![
                p.into(),
                "at-dir".into(),
                dir.display().to_string(),
                "secret".into(),
            ],
        ),
        ("proc-self-fd", vec![p.into(), "proc-fd".into(), s.into()]),
        (
            "open_by_handle_at",
            vec![
                p.into(),
                "handle".into(),
                s.into(),
                dir.display().to_string(),
            ],
        ),
        ("int 0x80", vec![p.into(), "int80".into(), s.into()]),
    ];
    for (route, argv) in &routes {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = w.pod().run(&argv);
        let e = assert_read_killed(&d, &out, name, &secret, route);
        assert_eq!(e["file"]["inode"], meta(&secret).ino(), "{route}: {e}");
        match *route {
            "int 0x80" => assert_eq!(e["file"]["abi"], "i386", "{e}"),
            // A handle names the inode, not a path: the kernel picks one of the file's names
            // (here maybe the hard link), so it is caught by identity.
            "open_by_handle_at" => assert_eq!(e["file"]["syscall"], "open_by_handle_at", "{e}"),
            "proc-self-fd" => assert!(
                out.stdout.contains("opath-ok"),
                "the O_PATH open is no read: {out}"
            ),
            _ => {}
        }
        if *route != "open_by_handle_at" {
            assert_eq!(e["file"]["path"], s, "{route}: the kernel's path: {e}");
        }
    }
    // Hard links: one made before the rules were loaded and one made after, both to the
    // protected file: caught by its identity (resolved at load), reported by the link's path.
    let late = w.dir().join("late-link");
    std::fs::hard_link(&secret, &late).unwrap();
    for link in [&early, &late] {
        let out = w.pod().run(&[cat, link.to_str().unwrap()]);
        let e = assert_read_killed(&d, &out, name, &secret, "hard link");
        assert_eq!(e["file"]["path"], link.to_str().unwrap(), "{e}");
        assert_eq!(e["file"]["inode"], meta(&secret).ino(), "{e}");
    }
    // The file replaced by a new one (another inode, as an editor or a package upgrade does):
    // the daemon re-resolves the `In` path (its once-a-second check of the files policies name)
    // and re-applies, so a hard link to the new file is caught by identity too.
    let fresh = dir.join("fresh");
    std::fs::write(&fresh, SECRET).unwrap();
    let mark = d.mark();
    std::fs::rename(&fresh, &secret).unwrap();
    d.wait_event_after(mark, "rules re-applied for the replaced file", |e| {
        ev::is(e, "status") && e["state"] == "reloaded"
    });
    let newer = w.dir().join("link-to-replaced");
    std::fs::hard_link(&secret, &newer).unwrap();
    let out = w.pod().run(&[cat, newer.to_str().unwrap()]);
    let e = assert_read_killed(&d, &out, name, &secret, "hard link to the replaced file");
    assert_eq!(e["file"]["inode"], meta(&secret).ino(), "{e}");
    // A bind mount of the file elsewhere (in a private mount namespace): same file.
    let target = w.dir().join("bind-target");
    std::fs::write(&target, "").unwrap();
    let script = format!(
        "mount --bind {s} {t} && exec {cat} {t}",
        t = target.display()
    );
    let out = w.pod().run(&[
        "unshare",
        "-m",
        "--propagation",
        "private",
        &sh,
        "-c",
        &script,
    ]);
    let e = assert_read_killed(&d, &out, name, &secret, "bind mount");
    assert_eq!(e["file"]["path"], target.to_str().unwrap(), "{e}");
}

/// Runs the probe on the host (no rule covers it): its stdout and stderr.
fn host_run(probe: &Path, args: &[&str]) -> (String, String) {
    let out = Command::new(probe).args(args).output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Where the io_uring tests start: a world of namespace `e2e-file` with the protected
/// directory ([`protected_dir`]), the C probe and an unrelated file `plain`.
struct UringWorld {
    w: World,
    dir: PathBuf,
    secret: PathBuf,
    probe: PathBuf,
    plain: PathBuf,
}

impl UringWorld {
    /// The protected file, the probe and `plain`, as command arguments.
    fn args(&self) -> (&str, &str, &str) {
        fn arg(p: &Path) -> &str {
            p.to_str().unwrap()
        }
        (arg(&self.secret), arg(&self.probe), arg(&self.plain))
    }
}

/// A [`UringWorld`], or `None` where io_uring does not work (the probe cannot read `plain`
/// through it on the host). It must be there to be tested: in CI (`CI=true`) its absence
/// fails, elsewhere the caller skips.
fn uring_world(tag: &str) -> Option<UringWorld> {
    let w = World::single(tag, "e2e-file");
    let dir = protected_dir(&w);
    let probe = build_probe(&w);
    let plain = w.dir().join("plain");
    std::fs::write(&plain, "plain\n").unwrap();
    let (_, err) = host_run(&probe, &["uring", plain.to_str().unwrap()]);
    if !err.contains("io_uring_setup") {
        return Some(UringWorld {
            w,
            secret: dir.join("secret"),
            dir,
            probe,
            plain,
        });
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "io_uring unavailable ({}): CI needs it (kernel.io_uring_disabled=0, no seccomp \
         filter on io_uring_setup)",
        err.trim()
    );
    eprintln!("io_uring unavailable here ({}): skipped", err.trim());
    None
}

/// A [`uring_world`] and a daemon whose policy `name` kills the reads of its protected file.
fn uring_reads_killed(tag: &str, name: &str) -> Option<(UringWorld, Daemon)> {
    let u = uring_world(tag)?;
    let only_secret = format!("{{operator: In, values: ['{}']}}", u.args().0);
    let d = start(&u.w, name, &only_secret, "read");
    Some((u, d))
}

/// The process of `out` was killed at its io_uring request `op` (making `access`) before it
/// saw the request's result or a byte of the protected file, and policy `policy` reported
/// the kill: the `process_file` event.
fn assert_uring_killed(
    d: &Daemon,
    policy: &str,
    out: &RunOutput,
    what: &str,
    access: &str,
    op: &str,
) -> Event {
    assert!(out.sigkilled(), "{what}: should be SIGKILLed: {out}");
    assert!(
        !out.stdout.contains("TOP-SECRET") && !out.stdout.contains("after"),
        "{what}: got on: {out}"
    );
    let pid = out.pid as u64;
    let e = wait_file(d, pid, what);
    assert_eq!(
        e["file"]["access"],
        serde_json::json!([access]),
        "{what}: {e}"
    );
    assert_eq!(e["file"]["io_uring"], op, "{what}: {e}");
    assert!(e["file"]["syscall"].is_null(), "{what}: {e}");
    let m = d.wait_event(&format!("policy_match of {what}"), |m| {
        ev::is_match(m, policy, "file") && ev::pid(m) == Some(pid)
    });
    assert_eq!(
        (&m["outcome"], &m["enforced"]),
        (&"killed".into(), &true.into()),
        "{what}: {m}"
    );
    e
}

/// io_uring's file requests make no system call: they are judged at the tracepoints io_uring
/// has. An open into a descriptor is judged at its completion like an open's exit (killed
/// before a byte is read); opens a completion cannot judge (a fixed-file slot, no completion,
/// a ring whose completions come when the submitter waits) are killed at submission whatever
/// the path, for a process an enforcing rule covers; unlink and rename by name at submission.
/// An unrelated file stays readable, and a process no rule covers keeps all of io_uring.
#[test]
fn file_io_uring_requests_are_judged_like_the_calls() {
    let _g = serial();
    let Some(u) = uring_world("file-uring") else {
        return;
    };
    let (w, dir, secret) = (&u.w, &u.dir, &u.secret);
    let (s, p, plain) = u.args();
    let host = |args: &[&str]| host_run(&u.probe, args);
    let name = "e2e-file-uring";
    let vault = format!("{}/", dir.display());
    let d = start(
        w,
        name,
        &format!("{{operator: Prefix, values: ['{vault}']}}"),
        "read, delete",
    );
    let killed = |out: &RunOutput, what: &str, access: &str, op: &str| -> Event {
        assert_uring_killed(&d, name, out, what, access, op)
    };

    // IORING_OP_OPENAT into a descriptor: judged at its completion from the file installed.
    let out = w.pod().run(&[p, "uring", s]);
    let e = assert_read_killed(&d, &out, name, secret, "io_uring openat");
    assert_eq!(e["file"]["io_uring"], "IORING_OP_OPENAT", "{e}");
    assert!(e["file"]["syscall"].is_null(), "{e}");
    assert_eq!(e["file"]["path"], s, "{e}");
    assert_eq!(e["file"]["path_resolved"], true, "{e}");
    assert_eq!(e["file"]["inode"], meta(secret).ino(), "{e}");
    assert!(e["file"].get("unjudged").is_none(), "{e}");
    // Its completion overflowing a full completion queue (no `io_uring_complete`), the
    // descriptor then read with read(2): judged when the overflow is recorded.
    let out = w.pod().run(&[p, "uring-overflow", s]);
    let e = assert_read_killed(
        &d,
        &out,
        name,
        secret,
        "io_uring openat, completion overflowed",
    );
    assert_eq!(e["file"]["io_uring"], "IORING_OP_OPENAT", "{e}");
    assert!(e["file"].get("unjudged").is_none(), "{e}");

    // Opens a completion cannot judge: killed at submission, the reason in the event.
    for (mode, reason) in [
        ("uring-direct", "fixed-file slot"),
        ("uring-skip", "IOSQE_CQE_SKIP_SUCCESS"),
        ("uring-defer", "IORING_SETUP_DEFER_TASKRUN"),
    ] {
        let out = w.pod().run(&[p, mode, s]);
        let e = killed(&out, mode, "read", "IORING_OP_OPENAT");
        assert!(
            e["file"]["unjudged"]
                .as_str()
                .is_some_and(|u| u.contains(reason)),
            "{mode}: {e}"
        );
        assert_eq!(e["file"]["path"], s, "{mode}: the name it gave: {e}");
        assert_eq!(e["file"]["path_resolved"], false, "{mode}: {e}");
    }

    // Unlink and rename by name, at submission (the request may still run: docs/files.md).
    for f in ["del", "ren"] {
        std::fs::write(dir.join(f), "x\n").unwrap();
    }
    let del = format!("{vault}del");
    let out = w.pod().run(&[p, "uring-unlink", &del]);
    let e = killed(&out, "io_uring unlinkat", "delete", "IORING_OP_UNLINKAT");
    assert_eq!(e["file"]["path"], del, "{e}");
    assert_eq!(e["file"]["path_resolved"], false, "{e}");
    let ren = format!("{vault}ren");
    let moved = w.dir().join("moved");
    let out = w
        .pod()
        .run(&[p, "uring-rename", &ren, moved.to_str().unwrap()]);
    let e = killed(&out, "io_uring renameat", "delete", "IORING_OP_RENAMEAT");
    assert_eq!(e["file"]["path"], ren, "{e}");

    // No false positives: an unrelated file through io_uring, read and unlinked.
    let out = w.pod().run(&[p, "uring", plain]);
    assert!(out.success() && out.stdout == "plain\n", "{out}");
    let junk = w.dir().join("junk");
    std::fs::write(&junk, "").unwrap();
    let out = w.pod().run(&[p, "uring-unlink", junk.to_str().unwrap()]);
    assert!(out.success() && out.stdout.contains("after 0"), "{out}");
    assert!(!junk.exists(), "the unrelated unlink ran");
    // A process no rule covers (the host) keeps every io_uring route to the file.
    for mode in [
        "uring",
        "uring-overflow",
        "uring-direct",
        "uring-skip",
        "uring-defer",
        "uring-openat2",
        "uring-sqpoll",
    ] {
        let (out, err) = host(&[mode, s]);
        assert_eq!(out, SECRET, "host {mode}: {err}");
    }
}

/// The attacker's other io_uring routes. `OPENAT2` and an `SQPOLL` ring (the kernel's thread
/// of the process submits the open) reading the protected file: killed, no byte out. A hard
/// link to it made through io_uring outside the guarded paths is no read (it is made), and
/// reading the file by that second name is killed by the file's identity. `MKDIRAT`,
/// `SYMLINKAT` and `LINKAT` creating under a directory a `create` rule guards, and
/// `FTRUNCATE` of a descriptor opened for writing before the policy loaded, are killed at
/// submission; `FTRUNCATE` of a registered file is killed whatever its file (fails closed).
#[test]
fn file_io_uring_openat2_sqpoll_links_creations_and_truncation_are_judged() {
    let _g = serial();
    let Some(u) = uring_world("file-uring-routes") else {
        return;
    };
    let (w, secret) = (&u.w, &u.secret);
    let (s, p, plain) = u.args();
    let guarded = w.dir().join("guarded");
    std::fs::create_dir_all(&guarded).unwrap();
    let trunc = guarded.join("trunc");
    std::fs::write(&trunc, "original\n").unwrap();
    // A descriptor opened for writing before the policy loaded (its writes are not judged:
    // docs/files.md); it waits for `go` to truncate the file through io_uring.
    let go = w.dir().join("go");
    let early = w.pod().spawn(&[
        p,
        "uring-ftruncate",
        trunc.to_str().unwrap(),
        go.to_str().unwrap(),
    ]);
    let opened = bulwark_e2e::poll_until(bulwark_e2e::timeout(), || {
        early.stdout_so_far().contains("opened").then_some(())
    });
    assert!(opened.is_some(), "the probe opened {}", trunc.display());

    let name = "e2e-file-uring-routes";
    let g = format!("{}/", guarded.display());
    let protected = format!("{{operator: In, values: ['{s}']}}");
    let under_g = format!("{{operator: Prefix, values: ['{g}']}}");
    let yaml = policy_of(
        name,
        &[
            ("e2e-file", &protected, "read", "Sigkill"),
            ("e2e-file", &under_g, "create, write", "Sigkill"),
        ],
    );
    let d = Daemon::start(w, &[("routes.yaml", &yaml)]);
    let killed = |out: &RunOutput, what: &str, access: &str, op: &str| -> Event {
        assert_uring_killed(&d, name, out, what, access, op)
    };

    // FTRUNCATE by descriptor: judged at submission by the descriptor's file.
    std::fs::write(&go, "").unwrap();
    let out = early.wait(bulwark_e2e::timeout());
    let e = killed(&out, "ftruncate by fd", "write", "IORING_OP_FTRUNCATE");
    assert_eq!(e["file"]["path"], trunc.to_str().unwrap(), "{e}");
    assert_eq!(e["file"]["path_resolved"], true, "{e}");
    assert_eq!(e["file"]["inode"], meta(&trunc).ino(), "{e}");
    assert!(e["file"].get("unjudged").is_none(), "{e}");

    // OPENAT2 and an SQPOLL ring: judged at the completion like OPENAT.
    for (mode, op) in [
        ("uring-openat2", "IORING_OP_OPENAT2"),
        ("uring-sqpoll", "IORING_OP_OPENAT"),
    ] {
        let out = w.pod().run(&[p, mode, s]);
        let e = assert_read_killed(&d, &out, name, secret, mode);
        assert_eq!(e["file"]["io_uring"], op, "{mode}: {e}");
        assert_eq!(e["file"]["path"], s, "{mode}: {e}");
        assert_eq!(e["file"]["inode"], meta(secret).ino(), "{mode}: {e}");
        assert!(e["file"].get("unjudged").is_none(), "{mode}: {e}");
    }

    // A second name for the file, made through io_uring where no rule guards creation: not
    // a read, so it is made; reading the file by it is killed by the file's identity.
    let second = w.dir().join("second-name");
    let out = w.pod().run(&[p, "uring-link", s, second.to_str().unwrap()]);
    assert!(out.success() && out.stdout.contains("after 0"), "{out}");
    assert_eq!(meta(&second).ino(), meta(secret).ino(), "a hard link");
    let out = w.pod().run(&[p, "uring", second.to_str().unwrap()]);
    let e = assert_read_killed(&d, &out, name, secret, "read by the io_uring hard link");
    assert_eq!(e["file"]["path"], second.to_str().unwrap(), "{e}");
    assert_eq!(e["file"]["inode"], meta(secret).ino(), "{e}");

    // Creations under the guarded directory: killed at submission, the new name reported.
    // The request is already issued (an io-wq worker makes it), so whether the name appears
    // before the exit cancels the request is not asserted (docs/files.md); if it does, it is
    // what was asked for.
    let in_g = |n: &str| guarded.join(n).to_str().unwrap().to_string();
    for (mode, args, op) in [
        ("uring-mkdir", vec![in_g("newdir")], "IORING_OP_MKDIRAT"),
        (
            "uring-symlink",
            vec![s.to_string(), in_g("sym")],
            "IORING_OP_SYMLINKAT",
        ),
        (
            "uring-link",
            vec![s.to_string(), in_g("link")],
            "IORING_OP_LINKAT",
        ),
    ] {
        let mut argv = vec![p, mode];
        argv.extend(args.iter().map(String::as_str));
        let out = w.pod().run(&argv);
        let e = killed(&out, mode, "create", op);
        let made = args.last().unwrap();
        assert_eq!(&e["file"]["path"], made.as_str(), "{mode}: {e}");
        assert_eq!(e["file"]["path_resolved"], false, "{mode}: {e}");
        if let Ok(m) = std::fs::symlink_metadata(made) {
            let as_asked = match mode {
                "uring-mkdir" => m.is_dir(),
                "uring-symlink" => std::fs::read_link(made).unwrap() == *secret,
                _ => m.ino() == meta(secret).ino(),
            };
            assert!(as_asked, "{mode}: {made} is not what was asked for");
        }
    }

    // FTRUNCATE of a registered file: no descriptor to judge, killed whatever the file.
    let scratch = w.dir().join("scratch");
    std::fs::write(&scratch, "scratch\n").unwrap();
    let out = w.pod().run(&[
        p,
        "uring-ftruncate",
        scratch.to_str().unwrap(),
        go.to_str().unwrap(),
        "fixed",
    ]);
    let e = killed(
        &out,
        "ftruncate of a fixed file",
        "write",
        "IORING_OP_FTRUNCATE",
    );
    assert!(
        e["file"]["unjudged"]
            .as_str()
            .is_some_and(|u| u.contains("registered (fixed) file")),
        "{e}"
    );

    // No false positives: a covered process reads and creates elsewhere through the same
    // routes (the host keeps them all to the protected file: the test above).
    let out = w.pod().run(&[p, "uring-sqpoll", plain]);
    assert!(out.success() && out.stdout == "plain\n", "{out}");
    let out = w.pod().run(&[p, "uring-openat2", plain]);
    assert!(out.success() && out.stdout == "plain\n", "{out}");
    let free = w.dir().join("free");
    let out = w.pod().run(&[p, "uring-mkdir", free.to_str().unwrap()]);
    assert!(out.success() && free.is_dir(), "{out}");
}

/// Requests queued behind an open of the protected file in the same submission, reading the
/// descriptor it will get and passing the bytes on: the open's completion comes only after
/// the whole submission, so it is judged at the next request's submission instead, and the
/// SIGKILL pending from there makes the read fail (`-EINTR`) before it copies a byte. Each
/// way in: plain requests, a linked chain, a read into a registered buffer, a splice to the
/// pipe, a send on a socketpair another process drains, and an open punted to io-wq with the
/// read submitted as soon as its descriptor exists. No byte of the file gets out of any, and
/// the open is reported and killed; a covered process reads an unrelated file the same ways.
#[test]
fn file_io_uring_requests_behind_an_open_in_one_submission_get_no_byte_out() {
    let _g = serial();
    let name = "e2e-file-uring-batch";
    let Some((u, d)) = uring_reads_killed("file-uring-batch", name) else {
        return;
    };
    let w = &u.w;
    let (s, p, plain) = u.args();
    let sh = preflight().sh.to_str().unwrap().to_string();
    for variant in ["read", "link", "fixed", "splice", "send", "async"] {
        let piped = format!("{p} uring-batch {s} {variant} | cat; echo piped");
        let out = w.pod().run(&[&sh, "-c", &piped]);
        assert!(out.stdout.contains("piped"), "{variant}: {out}");
        assert!(
            !out.stdout.contains("TOP-SECRET"),
            "{variant}: bytes of the protected file got out: {out}"
        );
        let args = format!("uring-batch {s} {variant}");
        let e = d.wait_event(&format!("process_file of the {variant} batch"), |e| {
            ev::is(e, "process_file")
                && e["process"]["arguments"]
                    .as_str()
                    .is_some_and(|a| a.starts_with(&args))
        });
        assert_eq!(e["file"]["io_uring"], "IORING_OP_OPENAT", "{variant}: {e}");
        assert_eq!(e["file"]["path"], s, "{variant}: {e}");
        assert!(e["file"].get("unjudged").is_none(), "{variant}: {e}");
        let m = d.wait_event(&format!("policy_match of the {variant} batch"), |m| {
            ev::is_match(m, name, "file") && ev::pid(m) == ev::pid(&e)
        });
        assert_eq!(
            (&m["outcome"], &m["enforced"]),
            (&"killed".into(), &true.into()),
            "{variant}: {m}"
        );
        // No false positives: the same requests on an unrelated file.
        let piped = format!("{p} uring-batch {plain} {variant} | cat; echo piped");
        let out = w.pod().run(&[&sh, "-c", &piped]);
        assert!(out.stdout.starts_with("plain\n"), "{variant}: {out}");
    }
}

/// `FILE_URING_INFLIGHT` (the io_uring opens waiting for their judgement) is no LRU: a flood
/// of slow opens (what the test does from userspace: it fills the daemon's map with dummy
/// requests) cannot evict a protected open's entry. An open that finds it full fails closed:
/// killed at submission whatever its path, the event saying why; a process no rule covers
/// keeps io_uring. With room again, the same open is judged by its file as before. Entries of
/// exited processes are swept by the daemon.
#[test]
fn file_io_uring_open_with_the_inflight_table_full_fails_closed() {
    let _g = serial();
    let name = "e2e-file-uring-full";
    let Some((u, d)) = uring_reads_killed("file-uring-full", name) else {
        return;
    };
    let (w, secret) = (&u.w, &u.secret);
    let (s, p, plain) = u.args();
    let table = UringInflightTable::of(&d);
    // Dummy opens of a live process (this test): the daemon's sweep keeps them.
    table.fill(table.max_entries, std::process::id());

    for (path, what) in [(s, "the protected file"), (plain, "an unrelated file")] {
        let out = w.pod().run(&[p, "uring", path]);
        let e = assert_uring_killed(&d, name, &out, what, "read", "IORING_OP_OPENAT");
        assert!(
            e["file"]["unjudged"]
                .as_str()
                .is_some_and(|u| u.contains("in flight full")),
            "{what}: {e}"
        );
        assert_eq!(e["file"]["path"], path, "{what}: the name it gave: {e}");
        assert_eq!(e["file"]["path_resolved"], false, "{what}: {e}");
    }
    let (out, err) = host_run(&u.probe, &["uring", s]);
    assert_eq!(out, SECRET, "the host keeps io_uring: {err}");

    table.empty();
    let out = w.pod().run(&[p, "uring", s]);
    let e = assert_read_killed(&d, &out, name, secret, "io_uring open with room");
    assert!(e["file"].get("unjudged").is_none(), "{e}");
    assert_eq!(e["file"]["path_resolved"], true, "{e}");
    let out = w.pod().run(&[p, "uring", plain]);
    assert!(out.success() && out.stdout == "plain\n", "{out}");

    // Opens of a process that is gone (an open that ended with no completion to judge it
    // would stay so): the daemon's sweep (every 30 s) removes them.
    let gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    let _ = { gone }.wait();
    table.fill(64, gone_pid);
    let reaped = bulwark_e2e::poll_until(std::time::Duration::from_secs(90), || {
        (table.len() == 0).then_some(())
    });
    assert!(
        reaped.is_some(),
        "{} entries of exited process {gone_pid} stayed in FILE_URING_INFLIGHT",
        table.len()
    );
}

/// The daemon's `FILE_URING_INFLIGHT` map, written with bpftool: dummy requests (keys no
/// kernel object has) as many as it holds.
struct UringInflightTable {
    id: u32,
    max_entries: u64,
}

impl UringInflightTable {
    fn of(d: &Daemon) -> UringInflightTable {
        let ids = d.map_ids();
        let out = Command::new(&preflight().bpftool)
            .args(["-j", "map", "show"])
            .output()
            .expect("bpftool (apt-get install bpftool)");
        let maps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let m = maps
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| {
                m["name"] == "FILE_URING_INFL"
                    && m["id"]
                        .as_u64()
                        .is_some_and(|id| ids.contains(&(id as u32)))
            })
            .unwrap_or_else(|| panic!("the daemon holds no FILE_URING_INFLIGHT map: {ids:?}"));
        UringInflightTable {
            id: m["id"].as_u64().unwrap() as u32,
            max_entries: m["max_entries"].as_u64().unwrap(),
        }
    }

    /// Runs `map <op> id ID key KEY <rest>` for the first `n` dummy keys, in one bpftool
    /// batch.
    fn each_dummy(&self, n: u64, op: &str, rest: &str) {
        let mut batch = String::new();
        for i in 1..=n {
            let key: Vec<String> = i.to_le_bytes().iter().map(|b| format!("{b:02x}")).collect();
            batch.push_str(&format!(
                "map {op} id {} key hex {} {rest}\n",
                self.id,
                key.join(" ")
            ));
        }
        let file =
            std::env::temp_dir().join(format!("bulwark-e2e-inflight-{}", std::process::id()));
        std::fs::write(&file, batch).unwrap();
        let out = Command::new(&preflight().bpftool)
            .arg("batch")
            .arg("file")
            .arg(&file)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&file);
        assert!(
            out.status.success(),
            "bpftool batch map {op}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Puts `n` dummy requests of process `tgid` in the table (`FileInflight`: flags, index,
    /// tgid).
    fn fill(&self, n: u64, tgid: u32) {
        let mut value = vec![0u8; 12];
        value.extend(tgid.to_le_bytes());
        let value: Vec<String> = value.iter().map(|b| format!("{b:02x}")).collect();
        self.each_dummy(n, "update", &format!("value hex {}", value.join(" ")));
    }

    fn empty(&self) {
        self.each_dummy(self.max_entries, "delete", "");
    }

    /// How many entries the table holds.
    fn len(&self) -> usize {
        let out = Command::new(&preflight().bpftool)
            .args(["-j", "map", "dump", "id", &self.id.to_string()])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array().map_or(0, Vec::len)
    }
}

/// An io_uring open is judged by the rules in force when it is issued, not those at its
/// submission: an OPENAT held behind a linked read of a FIFO while the rules are replaced twice
/// (the slot it was submitted under is rewritten, and the protected file's selector moves to
/// another bit) is still killed when the test lets it go, before a byte of the file is read.
/// The code before the change (judged with the bits and table kept at submission) also passed
/// this test in four re-runs; one earlier run of it, with an earlier version of the probe, let
/// the open read the file, unexplained (docs/files.md).
#[test]
fn file_io_uring_open_held_across_reloads_is_judged_by_the_rules_in_force() {
    let _g = serial();
    let Some(u) = uring_world("file-uring-held") else {
        return;
    };
    let (s, p, plain) = u.args();
    let name = "e2e-file-uring-held";
    let ns = "e2e-file";
    let secret = format!("{{operator: In, values: ['{s}']}}");
    let unrelated = |file: &str| format!("{{operator: In, values: ['{file}']}}");
    let decoy = u.dir.join("decoy");
    let decoy = decoy.to_str().unwrap();
    let d = Daemon::start(
        &u.w,
        &[(
            &format!("{name}.yaml"),
            &policy_of(name, &[(ns, &secret, "read", "Sigkill")]),
        )],
    );
    let fifo = u.w.dir().join("gate");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo {}", fifo.display());
    std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o666)).unwrap();
    // The probe with its open submitted and held.
    let hold = || {
        let held =
            u.w.pod()
                .spawn(&[p, "uring-held", s, fifo.to_str().unwrap()]);
        let submitted = bulwark_e2e::poll_until(bulwark_e2e::timeout(), || {
            held.stdout_so_far().contains("held").then_some(())
        });
        assert!(submitted.is_some(), "the probe submitted its held open");
        held
    };
    // Lets the held open go (non-blocking: with no reader left, the probe gone, this fails
    // instead of waiting) and waits for the probe.
    let release = |held: bulwark_e2e::Running| {
        let mut gate = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap_or_else(|e| {
                panic!(
                    "the probe's FIFO has no reader ({e}): {}",
                    held.stdout_so_far()
                )
            });
        std::io::Write::write_all(&mut gate, b"g").unwrap();
        held.wait(bulwark_e2e::timeout())
    };
    // No change of rules: the held open is judged when it completes.
    let out = release(hold());
    assert_uring_killed(&d, name, &out, "held open", "read", "IORING_OP_OPENAT");
    let held = hold();
    // Two rule sets, each with the protected file's selector further down: the second is
    // written into the slot the open was submitted under.
    for extra in [vec![plain], vec![plain, decoy]] {
        let others: Vec<String> = extra.iter().map(|f| unrelated(f)).collect();
        let mut selectors: Vec<(&str, &str, &str, &str)> = others
            .iter()
            .map(|paths| (ns, paths.as_str(), "read", "Post"))
            .collect();
        selectors.push((ns, &secret, "read", "Sigkill"));
        let st = d.replace_policy(&format!("{name}.yaml"), &policy_of(name, &selectors));
        assert_eq!(st["state"], "reloaded", "{st}");
    }
    let out = release(held);
    assert_uring_killed(
        &d,
        name,
        &out,
        "open held across two reloads",
        "read",
        "IORING_OP_OPENAT",
    );
}

/// The io_uring programs are pinned with the others: after a `kill -9` of the daemon an
/// io_uring open of the protected file is still killed before a byte gets out, and the
/// restarted daemon reports that kill (the syscall programs' equivalent is in lifecycle.rs).
#[test]
fn file_io_uring_opens_are_killed_while_no_daemon_runs() {
    let _g = serial();
    let Some(u) = uring_world("file-uring-dead") else {
        return;
    };
    let (w, secret) = (&u.w, &u.secret);
    let (s, p, _) = u.args();
    let name = "e2e-file-uring-dead";
    let yaml = policy(
        name,
        "e2e-file",
        &format!("{{operator: In, values: ['{s}']}}"),
        "read",
        "Sigkill",
    );
    // Declared before the daemon, dropped after it.
    let pins = PinDir::new("file-uring-dead");
    let mut d = Daemon::start_pinned(
        DaemonConfig {
            policies: vec![("p.yaml".into(), yaml)],
            workloads: w.workloads_yaml(),
            ..DaemonConfig::default()
        },
        &pins,
    );
    let out = w.pod().run(&[p, "uring", s]);
    assert_read_killed(&d, &out, name, secret, "io_uring open");

    let before_kill = d.mark();
    d.kill9();
    let out = w.pod().run(&[p, "uring", s]);
    assert!(out.sigkilled(), "killed while no daemon runs: {out}");
    assert!(
        !out.stdout.contains("TOP-SECRET"),
        "the secret got out: {out}"
    );
    let while_dead = out.pid as u64;

    d.respawn(&[]);
    assert!(
        d.stderr().contains("programs adopted from"),
        "the restarted daemon adopts the pins: {}",
        d.stderr()
    );
    let e = d.wait_event_after(
        before_kill,
        "the io_uring open made while no daemon ran",
        |e| ev::is(e, "process_file") && ev::pid(e) == Some(while_dead),
    );
    assert_eq!(e["file"]["io_uring"], "IORING_OP_OPENAT", "{e}");
    assert_eq!(e["file"]["path"], s, "{e}");
    let m = d.wait_event_after(before_kill, "its policy_match", |m| {
        ev::is_match(m, name, "file") && ev::pid(m) == Some(while_dead)
    });
    assert_eq!(
        (&m["outcome"], &m["enforced"]),
        (&"killed".into(), &true.into()),
        "{m}"
    );
    // The adopted programs go on killing.
    let out = w.pod().run(&[p, "uring", s]);
    assert_read_killed(&d, &out, name, secret, "io_uring open after the restart");
}

#[test]
fn file_writes_deletes_and_metadata_kill_the_caller_and_their_effect_happens() {
    let _g = serial();
    let w = World::single("file-write", "e2e-file");
    // A temporary copy standing in for /usr/bin or /etc: tests never write there.
    let guarded = w.dir().join("guarded");
    std::fs::create_dir_all(&guarded).unwrap();
    for f in [
        "keep",
        "keep2",
        "rootrel",
        "append",
        "trunc",
        "del",
        "mode",
        "renamed-over",
    ] {
        std::fs::write(guarded.join(f), "original\n").unwrap();
    }
    let evil = w.dir().join("evil");
    std::fs::write(&evil, "evil\n").unwrap();
    let g = format!("{}/", guarded.display());
    let name = "e2e-file-write";
    let d = start(
        &w,
        name,
        &format!("{{operator: Prefix, values: ['{g}']}}"),
        "write, create, delete, metadata",
    );
    let sh = preflight().sh.to_str().unwrap().to_string();
    let run = |script: &str| w.pod().run(&[&sh, "-c", script]);
    let killed = |out: &RunOutput, what: &str, access: &str| {
        assert!(out.sigkilled(), "{what}: {out}");
        assert!(
            !out.stdout.contains("after"),
            "{what}: ran on after the call: {out}"
        );
        let e = wait_file(&d, out.pid as u64, what);
        assert!(
            e["file"]["access"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == access),
            "{what}: {e}"
        );
        e
    };
    // Open for append: killed at the open's exit, nothing is written.
    let out = run(&format!("echo more >> {g}append; echo after"));
    killed(&out, "append", "write");
    assert_eq!(
        std::fs::read_to_string(guarded.join("append")).unwrap(),
        "original\n"
    );
    // Open with O_TRUNC: killed too, but the open has already truncated the file.
    let out = run(&format!("echo new > {g}trunc; echo after"));
    let e = killed(&out, "truncate", "write");
    assert!(
        e["file"]["flags"].as_str().unwrap().contains("O_TRUNC"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(guarded.join("trunc")).unwrap().len(),
        0,
        "O_TRUNC happens before the exit"
    );
    // unlink, chmod, rename over a file: judged at entry, the call still runs, the caller dies.
    let rm = bulwark_e2e::preflight::which("rm").unwrap();
    let out = w.pod().run(&[rm.to_str().unwrap(), &format!("{g}del")]);
    let e = killed(&out, "unlink", "delete");
    assert_eq!(e["file"]["path"], format!("{g}del"), "{e}");
    assert_eq!(e["file"]["path_resolved"], false, "{e}");
    assert!(
        !guarded.join("del").exists(),
        "the unlink ran before the kill landed"
    );
    let chmod = bulwark_e2e::preflight::which("chmod").unwrap();
    let out = w
        .pod()
        .run(&[chmod.to_str().unwrap(), "600", &format!("{g}mode")]);
    killed(&out, "chmod", "metadata");
    assert_eq!(
        meta(&guarded.join("mode")).permissions().mode() & 0o777,
        0o600
    );
    let python = preflight().python3.to_str().unwrap().to_string();
    let rename = format!(
        "import os; os.rename('{}', '{g}renamed-over'); print('after')",
        evil.display()
    );
    let out = w.pod().run(&[&python, "-c", &rename]);
    let e = killed(&out, "rename over", "write");
    assert_eq!(e["file"]["path"], format!("{g}renamed-over"), "{e}");
    assert_eq!(
        std::fs::read_to_string(guarded.join("renamed-over")).unwrap(),
        "evil\n"
    );
    // `..` through the dirfd: judged by the joined string, which the kernel resolves later.
    let out = run(&format!("cd {g} && exec {} ../guarded/keep", rm.display()));
    let e = killed(&out, "relative unlink", "delete");
    assert_eq!(
        e["file"]["path"],
        format!("{g}../guarded/keep"),
        "the caller's string, unresolved: {e}"
    );
    // Relative to the root directory as working directory.
    let out = run(&format!("cd / && exec {} {}rootrel", rm.display(), &g[1..]));
    let e = killed(&out, "unlink relative to /", "delete");
    assert_eq!(e["file"]["path"], format!("{g}rootrel"), "{e}");
    // The limit of a string judged at entry: a symlinked directory is resolved by the kernel
    // only after the tracepoint, so this delete is not seen (docs/files.md).
    let alias = w.dir().join("alias");
    std::os::unix::fs::symlink(&guarded, &alias).unwrap();
    let out = w
        .pod()
        .run(&[rm.to_str().unwrap(), alias.join("keep2").to_str().unwrap()]);
    assert!(out.success() && !guarded.join("keep2").exists(), "{out}");
    d.assert_no_event("a match of the delete through a symlinked directory", |e| {
        ev::is(e, "process_file") && ev::pid(e) == Some(out.pid as u64)
    });
    // Reading is not what this policy guards.
    let out = run(&format!("cat {g}mode > /dev/null && echo read-ok"));
    assert!(out.success() && out.stdout.contains("read-ok"), "{out}");
}

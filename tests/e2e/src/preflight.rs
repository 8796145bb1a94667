//! Checks that the machine can run the e2e tests — root, the cgroup v2 mount, and the tools the
//! harness drives (`ip`, `curl`, `openssl`, `python3`, `sh`, `bpftool`) — and finds their absolute paths.
//! Missing pieces are a loud failure naming what is missing and how to get it, never a skip:
//! a CI run that silently skipped every kernel test would prove nothing.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Absolute paths of the tools the harness runs.
#[derive(Clone, Debug)]
pub struct Tools {
    pub ip: PathBuf,
    pub curl: PathBuf,
    pub openssl: PathBuf,
    /// The real interpreter (`sys.executable`), not a pyenv shim: shims are shell scripts that
    /// exec the interpreter, which would add execs to every event chain.
    pub python3: PathBuf,
    pub sh: PathBuf,
    /// `/bin/touch`, copied by exec tests to test-only paths.
    pub touch: PathBuf,
    /// `bpftool`, to read the daemon's maps (e.g. which sockets are watched).
    pub bpftool: PathBuf,
}

/// Runs the checks once per process and returns the tools; panics with every problem found.
pub fn preflight() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| match check() {
        Ok(tools) => tools,
        Err(problems) => panic!(
            "the bulwark e2e tests cannot run on this machine:\n  - {}\n\
             (they need root, a cgroup v2 mount and the tools above; on Debian: \
             `apt-get install iproute2 curl openssl python3 bpftool`)",
            problems.join("\n  - ")
        ),
    })
}

fn check() -> Result<Tools, Vec<String>> {
    let mut problems = Vec::new();
    if unsafe { libc::geteuid() } != 0 {
        problems.push(
            "not running as root: network namespaces, cgroups and the daemon's eBPF programs \
             need root (run the tests with sudo or as root)"
                .to_string(),
        );
    }
    if let Err(e) = crate::cgroup::find_cgroup2_mount() {
        problems.push(e);
    }
    let mut find = |name: &str| match which(name) {
        Some(p) => p,
        None => {
            problems.push(format!("`{name}` not found on PATH"));
            PathBuf::from(name)
        }
    };
    let ip = find("ip");
    let curl = find("curl");
    let openssl = find("openssl");
    let python_on_path = find("python3");
    let sh = find("sh");
    let touch = find("touch");
    let bpftool = find("bpftool");
    let python3 = if python_on_path.is_absolute() {
        match real_python(&python_on_path) {
            Ok(p) => p,
            Err(e) => {
                problems.push(e);
                python_on_path
            }
        }
    } else {
        python_on_path
    };
    if problems.is_empty() {
        Ok(Tools {
            ip,
            curl,
            openssl,
            python3,
            sh,
            touch,
            bpftool,
        })
    } else {
        Err(problems)
    }
}

/// First executable file called `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn real_python(python: &Path) -> Result<PathBuf, String> {
    let out = std::process::Command::new(python)
        .args(["-c", "import sys, ssl; print(sys.executable)"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} cannot import ssl (the test servers need it): {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let exe = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if is_executable(&exe) {
        // The file itself, not a `python3 -> python3.11` symlink: a process's binary then has
        // one name whether the daemon sees it at exec or reads /proc/PID/exe.
        Ok(std::fs::canonicalize(&exe).unwrap_or(exe))
    } else {
        Err(format!(
            "{} reports sys.executable {:?}, which is not an executable file",
            python.display(),
            exe
        ))
    }
}

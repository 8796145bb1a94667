"""Turns the pod template of the one object of a kind in a manifest file (the DaemonSet of a
rendered install, `kubectl kustomize deploy/`, or the Job of deploy/unload-job.yaml) into the
`podman run` flags that give a container the same user, capabilities, root filesystem, PID
namespace and host mounts, one flag per line, so tests/image/image.sh runs the image as the
cluster would.

    python3 pod_podman_flags.py MANIFESTS.yaml KIND

Capabilities outside this process's bounding set cannot be granted by podman; they are left out
with a note on stderr (a sandboxed root may lack CAP_SYS_RESOURCE, which the daemon needs only
on kernels before 5.11). Anything in the pod spec this does not know how to express fails.
"""
import sys

import yaml

# Capability numbers (linux/capability.h) of the ones the DaemonSet may add.
CAP_NUMBERS = {"NET_ADMIN": 12, "SYS_ADMIN": 21, "SYS_RESOURCE": 24, "PERFMON": 38, "BPF": 39}


def bounding_set():
    for line in open("/proc/self/status"):
        if line.startswith("CapBnd:"):
            return int(line.split()[1], 16)
    raise SystemExit("no CapBnd in /proc/self/status")


def flags(obj):
    spec = obj["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    sc = c["securityContext"]
    out = ["--user", str(sc["runAsUser"])]
    if sc.get("readOnlyRootFilesystem"):
        out.append("--read-only")
    if sc.get("allowPrivilegeEscalation") is False:
        out += ["--security-opt", "no-new-privileges"]
    if sc.get("privileged"):
        out.append("--privileged")
    caps = sc.get("capabilities", {})
    if caps.get("drop") == ["ALL"]:
        out.append("--cap-drop=ALL")
    bnd = bounding_set()
    for cap in caps.get("add", []):
        if bnd >> CAP_NUMBERS[cap] & 1:
            out.append(f"--cap-add={cap}")
        else:
            print(f"note: CAP_{cap} is not in this machine's bounding set; left out", file=sys.stderr)
    if spec.get("hostPID"):
        out.append("--pid=host")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for m in c.get("volumeMounts", []):
        v = volumes[m["name"]]
        if "hostPath" in v:
            opts = ["ro" if m.get("readOnly") else "rw"]
            propagation = m.get("mountPropagation", "None")
            opts.append({"None": "rprivate", "HostToContainer": "rslave"}[propagation])
            out += ["-v", f"{v['hostPath']['path']}:{m['mountPath']}:{','.join(opts)}"]
        elif "emptyDir" in v:
            out += ["--tmpfs", m["mountPath"]]
        else:
            raise SystemExit(f"volume {m['name']}: only hostPath and emptyDir are translated")
    return out


def main():
    path, kind = sys.argv[1], sys.argv[2]
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    (obj,) = [d for d in docs if d["kind"] == kind]
    print("\n".join(flags(obj)))


if __name__ == "__main__":
    main()

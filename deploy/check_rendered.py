"""The checks deploy/validate.sh makes on one rendered install (the base or an overlay) beyond the
Kubernetes schema: the DaemonSet gets exactly the host access deploy/base/daemonset.yaml
documents (plus, in an overlay, a writable directory for an events file), pins its programs,
every image is bulwark at the version Cargo.toml says, and the ClusterRole grants every
cluster-wide API call the daemon makes (CLUSTER_RBAC).

    python check_rendered.py RENDERED.yaml TAG

TAG is what scripts/build-image.sh tags (bulwark:<version>). Exits 1 with what is wrong.
Needs PyYAML (in validate.sh's venv, a dependency of kubernetes-validate).
"""
import re
import sys

import yaml

CAPABILITIES = ["BPF", "NET_ADMIN", "PERFMON", "SYS_ADMIN", "SYS_RESOURCE"]
# Host paths by volume name: bpffs and tracefs at fixed places, the cgroup v2 tree at either
# place it has (unified or hybrid layout; deploy/overlays/cgroup-hybrid).
HOST_PATHS = {
    "bpffs": (["/sys/fs/bpf"], "/sys/fs/bpf", False),
    "tracefs": (["/sys/kernel/tracing"], "/sys/kernel/tracing", True),
    "cgroup": (["/sys/fs/cgroup", "/sys/fs/cgroup/unified"], None, True),
}
# What the daemon reads from its environment (RUST_LOG: env_logger; NODE_NAME: in args;
# BULWARK_CLUSTER_CIDRS: the environment form of `bulwark run --cluster-cidrs`).
KNOWN_ENV = {"NODE_NAME", "RUST_LOG", "BULWARK_CLUSTER_CIDRS"}


# Cluster-wide API calls of `bulwark run --kubernetes`, by the code that makes them:
# (API group, resource, verbs).
CLUSTER_RBAC = [
    ("bulwark.dev", "tracingpolicies", ["get", "list", "watch"]),  # policy_watch
    ("bulwark.dev", "tracingpoliciesnamespaced", ["get", "list", "watch"]),
    ("bulwark.dev", "tracingpolicies/status", ["patch"]),  # aggregate (status writer)
    ("bulwark.dev", "tracingpoliciesnamespaced/status", ["patch"]),
    ("bulwark.dev", "policyviolations", ["get", "list", "create", "patch", "delete"]),  # violations
    ("bulwark.dev", "bulwarknodes", ["get", "list", "watch", "create", "patch", "delete"]),  # node_report
    ("bulwark.dev", "encryptedprotocols", ["get", "list", "watch"]),  # protocol_watch
    ("bulwark.dev", "encryptedprotocols/status", ["patch"]),  # protocol_watch (status writer)
    ("events.k8s.io", "events", ["create", "patch"]),  # violations
    ("", "pods", ["get", "list", "watch"]),  # pod_watch
    ("", "nodes", ["get", "list", "watch"]),  # node_cidrs (this node's pod CIDRs)
]


class Invalid(Exception):
    pass


def need(cond, msg):
    if not cond:
        raise Invalid(msg)


def arg_value(args, flag):
    for a in args:
        if a.startswith(flag + "="):
            return a[len(flag) + 1 :]
    return None


def under(path, directory):
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def check_daemonset(ds):
    spec = ds["spec"]["template"]["spec"]
    containers = spec["containers"]
    need(len(containers) == 1, f"the DaemonSet has {len(containers)} containers; bulwark alone runs there")
    c = containers[0]
    sc = c.get("securityContext", {})
    caps = sc.get("capabilities", {})
    added = sorted(caps.get("add", []))
    need(added == CAPABILITIES, f"capabilities {added} != {CAPABILITIES} (the documented set)")
    need(caps.get("drop") == ["ALL"], "capabilities must drop ALL")
    need(sc.get("privileged") is False, "must not be privileged (privileged: false)")
    need(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false")
    need(spec.get("hostPID") is True, "hostPID missing")
    need(not spec.get("hostNetwork"), "hostNetwork is not needed")
    need(not spec.get("hostIPC"), "hostIPC is not needed")

    args = c.get("args", [])
    need("--pin-dir=/sys/fs/bpf/bulwark" in args, "the daemon must pin under the host's bpffs (--pin-dir=/sys/fs/bpf/bulwark)")
    env = {e["name"] for e in c.get("env", [])}
    for ref in sorted({r for a in args for r in re.findall(r"\$\((\w+)\)", a)}):
        need(ref in env, f"args use $({ref}), which the container's env does not define")
    for name in sorted(env - KNOWN_ENV):
        raise Invalid(f"env {name} is read by nothing in bulwark (known: {', '.join(sorted(KNOWN_ENV))})")

    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    host = {v["name"]: v["hostPath"]["path"] for v in spec.get("volumes", []) if "hostPath" in v}
    documented = "bpffs /sys/fs/bpf, tracefs /sys/kernel/tracing, cgroup /sys/fs/cgroup[/unified]"
    events = arg_value(args, "--events")
    need(events is not None, "the daemon has no --events argument")
    cgroup_root = arg_value(args, "--cgroup-root")
    for name, (paths, mount_at, read_only) in HOST_PATHS.items():
        need(host.get(name) in paths, f"hostPaths: volume {name} is {host.get(name)}, not one of {paths}")
        m = mounts.get(name)
        need(m is not None, f"hostPaths: volume {name} is not mounted")
        want_at = mount_at or cgroup_root
        need(m["mountPath"] == want_at, f"hostPaths: volume {name} mounted at {m['mountPath']}, not {want_at}")
        need(bool(m.get("readOnly")) == read_only, f"hostPaths: volume {name} must be {'read only' if read_only else 'writable'}")
    if events != "-":
        writable = [m for m in mounts.values() if not m.get("readOnly") and under(events, m["mountPath"])]
        need(writable, f"--events={events} is on no writable volume (the root filesystem is read only)")
    for name, path in sorted(host.items()):
        if name in HOST_PATHS:
            continue
        # The one extra an overlay may add: the directory of an --events file, writable.
        m = mounts.get(name)
        is_events_dir = (
            m is not None and events != "-" and not m.get("readOnly") and under(events, m["mountPath"])
        )
        need(is_events_dir, f"hostPaths: {name} ({path}) is not in the documented set ({documented}, and an --events file's directory)")
    return c["image"]


def check_cluster_role(role):
    for group, resource, verbs in CLUSTER_RBAC:
        granted = set()
        for rule in role.get("rules", []):
            if group in rule.get("apiGroups", []) and resource in rule.get("resources", []):
                granted |= set(rule.get("verbs", []))
        missing = [v for v in verbs if v not in granted]
        need(not missing, f"ClusterRole {role['metadata']['name']}: {resource} ({group or 'core'}) lacks {', '.join(missing)}, which the daemon needs")


def main():
    path, tag = sys.argv[1], sys.argv[2]
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    kinds = {d["kind"] for d in docs}
    for k in ["Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet"]:
        need(k in kinds, f"rendered output has no {k}")
    for role in (d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("bulwark")):
        check_cluster_role(role)
    images = [check_daemonset(d) for d in docs if d["kind"] == "DaemonSet"]
    for image in images:
        need(
            image.rsplit("/", 1)[-1] == tag,
            f"image {image} is not {tag} (Cargo.toml's version, what scripts/build-image.sh tags): "
            "set the tag in deploy/base/daemonset.yaml, deploy/unload-job.yaml and the overlays' images:",
        )
    print(f"ok: {', '.join(CAPABILITIES)} | images {', '.join(images)}")


if __name__ == "__main__":
    try:
        main()
    except Invalid as e:
        print(e, file=sys.stderr)
        sys.exit(1)

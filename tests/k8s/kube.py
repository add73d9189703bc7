"""Helpers for the k8s/ checks: render the kustomizations, read the rendered
objects, and run the pods of a StatefulSet as local processes.

`LocalPods` is the heart of the end-to-end checks: it takes the *rendered*
manifests and starts each pod's container exactly as the kubelet would (the
container's command + args, its env with `fieldRef`, `secretKeyRef` and
`$(VAR)` expansion), with three substitutions that stand in for what a pod
has and a local process has not:

* DNS: every stable pod name (`<pod>.<headless service>:<port>`) and every
  ClusterIP Service name (`<service>:<port>`) in the config files, env values
  and commands is replaced by `127.0.0.1:<a port of that pod>`;
* the network namespace: each pod listens on its own local ports instead of
  the container ports (for the proxy through the REDIS_RAFT_PROXY_BIND/PORT/
  ADMIN_PORT overrides, for Redis by rewriting `port`/`bind` in its copy of
  redis.conf), and `127.0.0.1:<containerPort>` inside a pod's own commands
  (the preStop hook) means that pod's local port;
* volumes: every volume mount path becomes a directory of that pod in the
  test's temp dir (ConfigMaps and Secrets written out as files, with their
  `items` and modes), in commands, env (e.g. REDIS_RAFT_PROXY_*_FILE) and
  config file contents alike.

Nothing but loopback is ever contacted.
"""

from __future__ import annotations

import atexit
import base64
import functools
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed for the k8s checks (pip install pyyaml)")

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
HOST = "127.0.0.1"

# The Kubernetes version the manifests are validated against (offline, with
# the kubernetes-validate package). Raise it deliberately, not by accident.
K8S_VERSION = "1.35"

KUBECTL = os.environ.get("KUBECTL") or shutil.which("kubectl")
REDIS_SERVER = shutil.which("redis-server")
VENV_BIN = Path(sys.executable).parent


def kustomizations() -> list[str]:
    """base and every overlay (directories with a kustomization.yaml)."""
    overlays = sorted(p.parent.relative_to(K8S).as_posix() for p in (K8S / "overlays").glob("*/kustomization.yaml"))
    return ["base"] + overlays


def require_kubectl() -> str:
    if KUBECTL is None:
        pytest.skip("kubectl not found on PATH: the k8s/ kustomizations cannot be rendered "
                    "(install kubectl >= 1.27, which embeds kustomize v5)")
    return KUBECTL


SECRET_NAME = "redis-raft-proxy-secret"

# Secrets the manifests use but do not make: name -> (type, keys). components/tls
# mounts redis-raft-proxy-tls, which cert-manager (k8s/README.md, "TLS") or the
# operator creates; the tests stand in a throwaway CA's certificate for it.
TLS_SECRET = "redis-raft-proxy-tls"
EXTERNAL_SECRETS = {TLS_SECRET: ("kubernetes.io/tls", ("tls.crt", "tls.key", "ca.crt"))}


@functools.cache
def dev_tls_secret() -> dict[str, str]:
    """The data of redis-raft-proxy-tls as cert-manager writes it, from proxy.process.devcerts:
    one certificate (server and client, for 127.0.0.1, where the tests map every pod
    name), its key, and the CA."""
    import tempfile

    from proxy.process.devcerts import DevCA

    root = Path(tempfile.mkdtemp(prefix="k8s-tls-"))
    atexit.register(shutil.rmtree, root, True)
    ca = DevCA(root)
    leaf = ca.leaf("redis-raft-proxy")
    return {"tls.crt": leaf.cert.read_text(), "tls.key": leaf.key.read_text(), "ca.crt": ca.cert.read_text()}


def _kustomize(path: Path, what: str) -> str:
    proc = subprocess.run([require_kubectl(), "kustomize", str(path)], capture_output=True, text=True,
                          timeout=60, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"kubectl kustomize {what} failed:\n{proc.stderr}")
    return proc.stdout


@functools.cache
def _committed_text(target: str) -> str:
    return _kustomize(K8S / target, f"k8s/{target}")


def committed_secret_keys() -> list[str]:
    """The keys of k8s/base/secret.env (whose committed values are placeholders)."""
    lines = (K8S / "base" / "secret.env").read_text().splitlines()
    return [ln.split("=", 1)[0].strip() for ln in lines if "=" in ln and not ln.lstrip().startswith("#")]


@functools.cache
def _render_text(target: str) -> str:
    """k8s/<target> as an operator deploys it (k8s/README.md, "Secrets"): an overlay of
    their own on top that replaces the placeholder Secret with values from
    `openssl rand -hex 32` (here: the secrets module). The proxies refuse the
    placeholders at start."""
    import secrets as random_secrets
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="k8s-overlay-"))
    atexit.register(shutil.rmtree, root, True)
    (root / "secret.env").write_text("".join(f"{k}={random_secrets.token_hex(32)}\n"
                                             for k in committed_secret_keys()))
    resource = os.path.relpath(K8S / target, root)     # kustomize refuses absolute resource paths
    (root / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n- {resource}\n"
        f"secretGenerator:\n- name: {SECRET_NAME}\n  behavior: replace\n  envs:\n  - secret.env\n")
    return _kustomize(root, f"k8s/{target} with an operator's Secret")


def kustomize_dir(resources: list[str], components: list[str] = ()) -> Rendered:
    """Render a throwaway kustomization of k8s/<resources> with k8s/<components>."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="k8s-combo-") as tmp:
        # kustomize refuses absolute paths
        res, comps = ([os.path.relpath(K8S / t, tmp) for t in ts] for ts in (resources, components))
        (Path(tmp) / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            f"resources: {json.dumps(res)}\ncomponents: {json.dumps(comps)}\n")
        text = _kustomize(Path(tmp), f"{resources} with {list(components)}")
    return Rendered("+".join([*resources, *components]), [d for d in yaml.safe_load_all(text) if d])


_prefetched = False


def render(target: str) -> Rendered:
    """The objects `kubectl kustomize k8s/<target>` renders under an operator's overlay
    with real secrets (each target rendered once per session; the first call renders
    all of them at once)."""
    global _prefetched
    if not _prefetched:
        _prefetched = True
        require_kubectl()
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda t: _try(_render_text, t), kustomizations()))
    return Rendered(target, [d for d in yaml.safe_load_all(_render_text(target)) if d])


def render_committed(target: str) -> Rendered:
    """`kubectl kustomize k8s/<target>` as committed: the Secret holds the placeholders."""
    return Rendered(target, [d for d in yaml.safe_load_all(_committed_text(target)) if d])


def _try(fn, *args):
    try:
        return fn(*args)
    except AssertionError:
        return None   # reported by the test that renders this target


@dataclass
class Rendered:
    target: str
    objects: list[dict]

    def all(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict:
        found = [o for o in self.all(kind) if o["metadata"]["name"] == name]
        have = [o["metadata"]["name"] for o in self.all(kind)]
        assert found, f"{self.target}: no {kind} named {name!r} (have {have})"
        return found[0]

    def configmap(self, name: str) -> dict[str, str]:
        return dict(self.get("ConfigMap", name).get("data", {}))

    def secret(self, name: str) -> dict[str, str]:
        """The Secret's data; for one of EXTERNAL_SECRETS that the manifests do not make,
        what the cluster would hold (dev_tls_secret)."""
        if name in EXTERNAL_SECRETS and not any(o["metadata"]["name"] == name for o in self.all("Secret")):
            return dev_tls_secret()
        obj = self.get("Secret", name)
        out = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        out.update(obj.get("stringData") or {})
        return out

    def services_selecting(self, pod_labels: dict[str, str]) -> list[dict]:
        out = []
        for svc in self.all("Service"):
            sel = svc["spec"].get("selector") or {}
            if sel and all(pod_labels.get(k) == v for k, v in sel.items()):
                out.append(svc)
        return out


def mounts_of(c: dict, pod_dir: Path) -> dict[str, Path]:
    """mountPath -> the pod's local directory for that volume."""
    return {m["mountPath"]: pod_dir / "volumes" / m["name"] for m in c.get("volumeMounts", [])}


def map_mount_paths(mounts: dict[str, Path], text: str) -> str:
    """Each mount path (a whole path component sequence) -> its local directory, in
    one pass so that a local path is never mapped again."""
    if not mounts:
        return text
    alternatives = "|".join(re.escape(m) for m in sorted(mounts, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w/.-])({alternatives})(?=[/\"'\s,]|$)", re.MULTILINE)
    return pattern.sub(lambda m: str(mounts[m.group(1)]), text)


def write_volume(rendered: Rendered, vol: dict, local: Path,
                 transform: Callable[[str, str], str] | None = None) -> None:
    """A ConfigMap or Secret volume's files in `local`, as the kubelet projects them:
    every key, or only the `items` (at their `path`), with the item's `mode` or the
    volume's `defaultMode` (0644). A listed key the object lacks fails the pod
    (here: the test) unless the volume is `optional`. `transform(path, content)`
    may rewrite a file's content."""
    if "configMap" in vol:
        src = vol["configMap"]
        name, data = src["name"], rendered.configmap(src["name"])
    elif "secret" in vol:
        src = vol["secret"]
        name, data = src["secretName"], rendered.secret(src["secretName"])
    else:
        raise AssertionError(f"volume {vol['name']}: not a ConfigMap or Secret: {vol}")
    items = src.get("items") or [{"key": k, "path": k} for k in data]
    for item in items:
        if item["key"] not in data:
            assert src.get("optional"), f"volume {vol['name']}: key {item['key']!r} missing in {name}"
            continue
        content = data[item["key"]]
        if transform is not None:
            content = transform(item["path"], content)
        target = local / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            target.chmod(0o600)
        target.write_text(content)
        target.chmod(int(item.get("mode", src.get("defaultMode", 0o644))))


def pod_volumes(rendered: Rendered, sts: dict, pod_dir: Path,
                transform: Callable[[str, str], str] | None = None) -> dict[str, Path]:
    """Create the volumes of one pod of `sts` under `pod_dir` (ConfigMap files, through
    `transform` when given, and Secret files written; emptyDirs and claims as empty
    directories); mountPath -> local dir."""
    spec = pod_spec(sts)
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    mounts = mounts_of(container(sts), pod_dir)
    for mount, local in mounts.items():
        local.mkdir(parents=True, exist_ok=True)
        vol = volumes.get(local.name)
        if vol is None:
            assert local.name in claims, f"mount {mount} has neither a volume nor a claim"
        elif "configMap" in vol or "secret" in vol:
            write_volume(rendered, vol, local, transform if "configMap" in vol else None)
        else:
            assert "emptyDir" in vol, f"volume {local.name} kind not emulated: {vol}"
    return mounts


def pod_spec(sts: dict) -> dict:
    return sts["spec"]["template"]["spec"]


def container(sts: dict, name: str | None = None) -> dict:
    cs = pod_spec(sts)["containers"]
    return cs[0] if name is None else next(c for c in cs if c["name"] == name)


def container_port(c: dict, port: int | str) -> int:
    """A probe/service port (number or name) as the container's port number."""
    if isinstance(port, int):
        return port
    if str(port).isdigit():
        return int(port)
    for p in c.get("ports", []):
        if p.get("name") == port:
            return int(p["containerPort"])
    raise AssertionError(f"container {c['name']} has no port named {port!r}")


# ---------------------------------------------------------------------------
# what the kubelet does with env and commands

_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined vars are substituted, `$$` is a
    literal `$`, references to undefined vars stay as they are."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _VAR_REF.sub(sub, value)


def container_env(rendered: Rendered, c: dict, pod_name: str, namespace: str = "default") -> dict[str, str]:
    """The container's environment as the kubelet builds it (env only; the
    manifests use no envFrom)."""
    assert not c.get("envFrom"), "envFrom is not emulated by these tests"
    env: dict[str, str] = {}
    for e in c.get("env", []):
        name = e["name"]
        if "value" in e:
            env[name] = expand(str(e["value"]), env)
            continue
        src = e.get("valueFrom") or {}
        if "fieldRef" in src:
            path = src["fieldRef"]["fieldPath"]
            values = {"metadata.name": pod_name, "metadata.namespace": namespace, "spec.nodeName": "node-1",
                      "status.podIP": HOST}
            assert path in values, f"fieldRef {path} is not emulated"
            env[name] = values[path]
        elif "secretKeyRef" in src or "configMapKeyRef" in src:
            ref = src.get("secretKeyRef") or src.get("configMapKeyRef")
            data = rendered.secret(ref["name"]) if "secretKeyRef" in src else rendered.configmap(ref["name"])
            if ref["key"] in data:
                env[name] = data[ref["key"]]
            else:
                assert ref.get("optional"), f"env {name}: key {ref['key']!r} missing in {ref['name']}"
        else:
            raise AssertionError(f"env {name}: unsupported valueFrom {src}")
    return env


def full_command(c: dict, env: dict[str, str]) -> list[str]:
    """command + args with `$(VAR)` expansion (the image's ENTRYPOINT is not
    consulted: every container here sets `command`)."""
    assert c.get("command"), f"container {c['name']} relies on the image's ENTRYPOINT"
    return [expand(a, env) for a in list(c["command"]) + list(c.get("args", []))]


# ---------------------------------------------------------------------------
# local stand-ins for pods

def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """GET `url`; an https:// server's certificate is not checked (as the kubelet's
    probes do not)."""
    ctx = None
    if url.startswith("https://"):
        import ssl

        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, exc.read().decode(errors="replace")
        except (OSError, http.client.HTTPException) as body_exc:
            return exc.code, f"(body unreadable: {body_exc!r})"
    except (OSError, http.client.HTTPException) as exc:
        # A server that is starting or stopping may close mid-response (BadStatusLine,
        # IncompleteRead, ...): no answer, as for a refused connection; callers poll again.
        return 0, f"{type(exc).__name__}: {exc}"


def wait_until(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.1,
               diagnose: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = ("\n" + diagnose()) if diagnose else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)


@dataclass
class Pod:
    sts: str
    ordinal: int
    name: str
    spec: dict
    dir: Path
    ports: dict[int, int] = field(default_factory=dict)   # containerPort -> local port
    https: set[int] = field(default_factory=set)           # containerPorts probed with scheme HTTPS
    proc: subprocess.Popen | None = None
    log: Path | None = None

    def local(self, container_port_: int) -> int:
        return self.ports[container_port_]

    def url(self, container_port_: int, path: str = "") -> str:
        scheme = "https" if container_port_ in self.https else "http"
        return f"{scheme}://{HOST}:{self.local(container_port_)}{path}"

    def tail(self, n: int = 40) -> str:
        if self.log is None or not self.log.exists():
            return f"[{self.name}: no log]"
        lines = self.log.read_text(errors="replace").splitlines()[-n:]
        return f"--- {self.name} (exit {self.proc.poll() if self.proc else None}) ---\n" + "\n".join(lines)


class LocalPods:
    """The pods of the rendered StatefulSets as local processes (see module doc)."""

    def __init__(self, rendered: Rendered, tmp: Path, statefulsets: list[str]) -> None:
        self.r = rendered
        self.tmp = tmp
        self.pods: dict[str, list[Pod]] = {}
        self.addr_map: dict[tuple[str, int], str] = {}
        # Every pod's local ports are taken in one call, all bound at once, so no two
        # coincide: ports taken pod by pod could (a CI run gave a proxy's Sentinel port
        # the port of a redis-server, which then answered the test's Sentinel client).
        wanted = sum(len(container(rendered.get("StatefulSet", n)).get("ports", []))
                     * int(rendered.get("StatefulSet", n)["spec"].get("replicas", 1)) for n in statefulsets)
        spare = iter(free_ports(wanted))
        for name in statefulsets:
            sts = rendered.get("StatefulSet", name)
            c = container(sts)
            cports = [int(p["containerPort"]) for p in c.get("ports", [])]
            pods = []
            for i in range(int(sts["spec"].get("replicas", 1))):
                pod_name = f"{name}-{i}"
                pod = Pod(name, i, pod_name, sts, tmp / pod_name)
                pod.ports = {cp: next(spare) for cp in cports}
                pod.https = {container_port(c, probe["httpGet"]["port"]) for probe in
                             (c.get("readinessProbe"), c.get("livenessProbe"))
                             if probe and "httpGet" in probe and probe["httpGet"].get("scheme") == "HTTPS"}
                pods.append(pod)
                for cp, lp in pod.ports.items():
                    # <pod>.<governing headless service>:<port>
                    self.addr_map[(f"{pod_name}.{sts['spec']['serviceName']}", cp)] = f"{HOST}:{lp}"
            self.pods[name] = pods
        # ClusterIP Services: <service>:<port> -> the first pod they select.
        for svc in rendered.all("Service"):
            if svc["spec"].get("clusterIP") == "None":
                continue
            sel = svc["spec"].get("selector") or {}
            for name, pods in self.pods.items():
                labels = pod_spec_labels(pods[0].spec)
                if sel and all(labels.get(k) == v for k, v in sel.items()):
                    c = container(pods[0].spec)
                    for sp in svc["spec"]["ports"]:
                        target = container_port(c, sp.get("targetPort", sp["port"]))
                        self.addr_map[(svc["metadata"]["name"], int(sp["port"]))] = f"{HOST}:{pods[0].local(target)}"

    # -- substitutions --------------------------------------------------------
    _ADDR = re.compile(r"(?<![\w.-])([a-z0-9](?:[a-z0-9.-]*[a-z0-9])?):(\d{1,5})(?!\d)")

    def map_dns(self, text: str) -> str:
        def sub(m: re.Match) -> str:
            return self.addr_map.get((m.group(1), int(m.group(2))), m.group(0))
        return self._ADDR.sub(sub, text)

    def map_own_ports(self, pod: Pod, text: str) -> str:
        for cp, lp in pod.ports.items():
            text = re.sub(rf"(?<![\w.-])(127\.0\.0\.1|localhost):{cp}(?!\d)", f"{HOST}:{lp}", text)
        return text

    def mounts(self, pod: Pod) -> dict[str, Path]:
        """mountPath -> the pod's local directory for that volume."""
        return mounts_of(container(pod.spec), pod.dir)

    def map_paths(self, pod: Pod, text: str) -> str:
        return map_mount_paths(self.mounts(pod), text)

    def localise(self, pod: Pod, text: str) -> str:
        return self.map_paths(pod, self.map_own_ports(pod, self.map_dns(text)))

    # -- start ---------------------------------------------------------------
    def prepare(self, pod: Pod, rewrite_file: Callable[[Pod, str, str], str] | None = None) -> None:
        """Create the pod's volumes: ConfigMap files (localised), Secret files (as
        they are), empty dirs."""
        def transform(path: str, content: str) -> str:
            content = self.localise(pod, content)
            return rewrite_file(pod, path, content) if rewrite_file is not None else content

        pod_volumes(self.r, pod.spec, pod.dir, transform)

    def env(self, pod: Pod, extra: dict[str, str] | None = None) -> dict[str, str]:
        c = container(pod.spec)
        env = {k: self.localise(pod, v) for k, v in container_env(self.r, c, pod.name).items()}
        base = {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
                "HOME": str(pod.dir), "LC_ALL": "C.UTF-8"}
        tmp_mount = self.mounts(pod).get("/tmp")
        if tmp_mount is not None:
            base["TMPDIR"] = str(tmp_mount)
        return {**base, **env, **(extra or {})}

    def start(self, pod: Pod, extra_env: dict[str, str] | None = None) -> None:
        c = container(pod.spec)
        env = self.env(pod, extra_env)
        cmd = [self.localise(pod, a) for a in full_command(c, env)]
        pod.log = pod.dir / "container.log"
        with open(pod.log, "ab") as log:
            pod.proc = subprocess.Popen(cmd, env=env, cwd=pod.dir, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        _STARTED.append(pod.proc)

    def run_prestop(self, pod: Pod, timeout: float = 30.0) -> subprocess.CompletedProcess:
        c = container(pod.spec)
        env = self.env(pod)
        cmd = [self.localise(pod, expand(a, env)) for a in c["lifecycle"]["preStop"]["exec"]["command"]]
        return subprocess.run(cmd, env=env, cwd=pod.dir, capture_output=True, text=True, timeout=timeout,
                              check=False)

    def probe_ok(self, pod: Pod, probe_name: str) -> bool:
        c = container(pod.spec)
        get = c[probe_name]["httpGet"]
        status, _ = http_get(pod.url(container_port(c, get["port"]), get["path"]), timeout=1.0)
        return status == 200

    def stop_all(self) -> None:
        procs = [p.proc for pods in self.pods.values() for p in pods if p.proc and p.proc.poll() is None]
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(5)

    def check_alive(self) -> None:
        """Fail at once, with the logs, when a container process has exited."""
        dead = [p for pods in self.pods.values() for p in pods if p.proc is not None and p.proc.poll() is not None]
        if dead:
            raise AssertionError(f"container exited: {', '.join(p.name for p in dead)}\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(p.tail() for pods in self.pods.values() for p in pods)


_STARTED: list[subprocess.Popen] = []


@atexit.register
def _kill_leftovers() -> None:
    """Last resort (an interrupted session): no pod process outlives the tests."""
    for proc in _STARTED:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)


def pod_spec_labels(sts: dict) -> dict[str, str]:
    return dict(sts["spec"]["template"]["metadata"].get("labels") or {})


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def rewrite_redis_conf(port_of: Callable[[Pod], int]) -> Callable[[Pod, str, str], str]:
    """The network-namespace part for Redis: its own local port (`port`, or `tls-port`
    with `port 0`), loopback only."""
    def rewrite(pod: Pod, key: str, content: str) -> str:
        if not key.endswith(".conf"):
            return content
        out = []
        for line in content.splitlines():
            word = line.split(maxsplit=1)[0].lower() if line.strip() and not line.lstrip().startswith("#") else ""
            if word in ("port", "tls-port") and line.split()[1] != "0":
                line = f"{word} {port_of(pod)}"
            elif word == "bind":
                line = f"bind {HOST}"
            out.append(line)
        return "\n".join(out) + "\n"
    return rewrite


def status(pod: Pod, admin_port: int) -> dict | None:
    code, body = http_get(pod.url(admin_port, "/status"), timeout=1.0)
    if code != 200:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None

"""Dockerfile and .dockerignore: a multi-stage build whose final image has the
venv but no build tools, runs as the user the manifests expect, and copies
every package the project ships. (No Docker daemon is needed: these are
static checks; building the image is `docker build -t redis-raft-proxy:0.1.0 .`.)"""

from __future__ import annotations

import re
import tomllib

from .kube import ROOT, container, render

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    out, buf = [], []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not buf):
            continue
        if line.endswith("\\"):
            buf.append(line[:-1].strip())
            continue
        buf.append(line)
        joined = " ".join(x for x in buf if x)
        buf = []
        if joined:
            word, _, rest = joined.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in _instructions(DOCKERFILE.read_text()):
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def _args() -> dict[str, str]:
    out = {}
    for word, rest in _instructions(DOCKERFILE.read_text()):
        if word == "FROM":
            break
        if word == "ARG" and "=" in rest:
            k, _, v = rest.partition("=")
            out[k] = v
    return out


def _image(stage) -> str:
    ref = stage[0][1].split()[0]
    return re.sub(r"\$\{(\w+)\}", lambda m: _args()[m.group(1)], ref)


def test_multi_stage_on_slim_python():
    stages = _stages()
    assert len(stages) >= 2
    for st in stages:
        img = _image(st)
        assert img.startswith("python:3.11") and "slim" in img, img
    build = stages[0]
    build_text = " ".join(r for _, r in build)
    assert "gcc" in build_text and "pip wheel" in build_text
    assert "import proxy.protocol._speedups" in build_text, "the build fails when the C extension did not compile"
    assert "python -m venv /opt/venv" in build_text


def test_final_image_has_no_build_tools_and_runs_unprivileged():
    final = _stages()[-1]
    text = " ".join(f"{w} {r}" for w, r in final)
    for tool in ("gcc", "build-essential", "libc6-dev", "apt-get install", "pip install"):
        assert tool not in text, f"{tool!r} in the final stage"
    copies = [r for w, r in final if w == "COPY"]
    assert any(c.startswith("--from=") and c.split()[1:] == ["/opt/venv", "/opt/venv"] for c in copies)
    assert all(c.startswith("--from=") for c in copies), "only the built venv is copied in"
    users = [r for w, r in final if w == "USER"]
    assert users, "USER in the final stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root user (runAsNonRoot can check it)"
    sts = render("base").get("StatefulSet", "redis-raft-proxy")
    assert sts["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)
    env = " ".join(r for w, r in final if w == "ENV")
    assert "PATH=/opt/venv/bin:" in env
    # the manifests' command is on the image's PATH
    assert container(sts)["command"][0] == "redis-raft-proxy"
    entry = [r for w, r in final if w == "ENTRYPOINT"]
    assert entry and "redis-raft-proxy" in entry[-1]
    exposed = {int(p) for w, r in final if w == "EXPOSE" for p in r.split()}
    # the client, admin and Sentinel-compatible ports the manifests declare on the proxy container
    assert exposed == {6380, 8000, 26379} == {int(p["containerPort"]) for p in container(sts)["ports"]}


def test_build_copies_every_package_and_the_ignore_file_keeps_the_context_small():
    build = _stages()[0]
    copied = {src.rstrip("/") for w, r in build if w == "COPY" and not r.startswith("--from")
              for src in r.split()[:-1]}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.split(".")[0] for p in pyproject["tool"]["setuptools"]["packages"]}   # subpackages come along
    assert packages <= copied, f"packages not copied into the build: {packages - copied}"
    assert {"pyproject.toml", "setup.py", pyproject["project"]["readme"]} <= copied
    for src in copied:
        assert (ROOT / src).exists(), src
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "**/*.so", "**/__pycache__", "tests"} <= ignored
    assert not ignored & (packages | {"pyproject.toml", "setup.py", "README.md"})


# -- pinned dependencies and container defaults (issue 18) -------------------------

LOCK = ROOT / "requirements.lock"
CONTAINER_CONFIG = ROOT / "config.container.toml"


def _lock() -> dict[str, tuple[str, list[str]]]:
    """name (normalised) -> (version, hashes) of requirements.lock."""
    text = LOCK.read_text().replace("\\\n", " ")
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        pin = line.split()[0]
        name, eq, version = pin.partition("==")
        assert eq and version, f"not pinned with ==: {pin}"
        out[re.sub(r"[-_.]+", "-", name).lower()] = (version, re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
    return out


def test_dependencies_are_installed_from_the_lock_by_hash():
    build = _stages()[0]
    text = " ".join(r for _, r in build)
    assert "--require-hashes" in text and "-r requirements.lock" in text
    assert "pip install --no-deps /wheels/" in text, "the project's wheel resolves nothing more"
    assert "pip check" in text, "a lock that no longer satisfies pyproject.toml fails the build"
    lock = _lock()
    assert all(hashes for _, hashes in lock.values()), "every pin has its hashes"
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        name = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", dep).group(0)).lower()
        assert name in lock, f"{name} (pyproject.toml) is not in requirements.lock: run scripts/lock.sh"


def test_container_defaults_listen_on_every_interface_and_name_no_local_redis():
    from proxy.process.config import ConfigError, load_config

    final = _stages()[-1]
    cmd = [r for w, r in final if w == "CMD"][-1]
    assert "/etc/redis-raft-proxy/container.toml" in cmd
    assert any(r.split()[1:] == ["/etc/redis-raft-proxy", "/etc/redis-raft-proxy"] for w, r in final if w == "COPY")
    build = " ".join(r for w, r in _stages()[0] if w == "COPY")
    assert "config.container.toml /etc/redis-raft-proxy/container.toml" in build
    # without a node list the proxy refuses to start, naming the key (not 127.0.0.1:7000..7002)
    try:
        load_config(str(CONTAINER_CONFIG), env={})
        raise AssertionError("the container config starts without redis_nodes")
    except ConfigError as exc:
        assert "redis_nodes" in str(exc)
    nodes = "redis-0.redis:6379,redis-1.redis:6379"
    cfg = load_config(str(CONTAINER_CONFIG), env={"REDIS_RAFT_PROXY_REDIS_NODES": nodes})
    assert cfg.bind == "0.0.0.0" and cfg.data_dir == "/data"
    assert cfg.redis_nodes == ["redis-0.redis:6379", "redis-1.redis:6379"]
    settings = "\n".join(line.split("#", 1)[0] for line in CONTAINER_CONFIG.read_text().splitlines())
    assert "bind" in settings and "127.0.0.1" not in settings and "localhost" not in settings
    # the image's volume and the HEALTHCHECK agree with these defaults
    assert any(w == "VOLUME" and "/data" in r for w, r in final)
    health = [r for w, r in final if w == "HEALTHCHECK"][-1]
    assert f":{cfg.admin_port}/healthz" in health

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
    assert "import proxy._speedups" in build_text, "the build fails when the C extension did not compile"
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
    assert exposed == {6380, 8000}


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

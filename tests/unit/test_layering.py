"""The folders import one another only as docs/design.md's "Where things live" says: the
Raft core nothing of ours, the control loop (health/) no part of the proxy process, the
data path no part of the process around it. A new import across the lines fails here
and either goes or is argued for in that table and below."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# area -> the modules (or packages: a prefix followed by ".") it may import besides its own
ALLOWED: dict[str, tuple[str, ...]] = {
    "raft": (),
    "health": ("raft.", "proxy.routing.", "proxy.protocol."),
    "proxy.protocol": (),
    "proxy.routing": ("proxy.protocol.", "health.probes.probe", "health.shard.decide"),
    "proxy.dataplane": ("proxy.session.", "proxy.protocol.", "proxy.write_gate", "proxy.upstream",
                        "proxy.process.metrics"),
    # the data path: the client sessions, the Sentinel-compatible port, the upstreams, the write gate,
    # TLS; from raft/ only the constant-time comparison of secrets and the HTTP session factory
    "proxy": ("proxy.protocol.", "proxy.routing.", "health.", "raft.auth", "raft.transport"),
    "proxy.process": ("raft.", "health.", "proxy."),
}


def area(module: str) -> str:
    """raft, health, proxy.protocol, proxy.routing, proxy.dataplane, proxy.process, or proxy:
    the data path (the sessions, the Sentinel-compatible port, the upstreams, the write gate, TLS)."""
    parts = module.split(".")
    if parts[0] != "proxy":
        return parts[0]
    if len(parts) > 1 and parts[1] in ("protocol", "routing", "dataplane", "process"):
        return f"proxy.{parts[1]}"
    return "proxy"


def imports_of(path: Path, module: str) -> set[str]:
    """The project's modules that `path`, the module `module`, imports; relative imports resolved."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                names = [".".join([*base, node.module])] if node.module else \
                    [".".join([*base, a.name]) for a in node.names]
            else:
                names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out |= {n for n in names if n.split(".")[0] in ("raft", "health", "proxy")}
    return out


def allowed(importer_area: str, target: str) -> bool:
    if target == "proxy" or area(target) == importer_area:
        return True         # its own area; the package's __version__
    return any(target == a.rstrip(".") or (a.endswith(".") and target.startswith(a)) for a in ALLOWED[importer_area])


def crossings(path: Path, module: str) -> list[str]:
    return [f"{module} imports {t}" for t in sorted(imports_of(path, module)) if not allowed(area(module), t)]


def test_every_import_across_folders_is_one_the_design_allows():
    found = []
    for top in ("raft", "health", "proxy"):
        for path in sorted((REPO / top).rglob("*.py")):
            found += crossings(path, ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"))
    assert found == []


def test_the_check_sees_a_crossing(tmp_path):
    """The check itself: the control loop importing the process around the proxy is caught,
    relative imports included."""
    assert not allowed("health", "proxy.process.metrics")
    assert not allowed("raft", "health.state_machine")
    assert not allowed("proxy", "proxy.process.server")
    assert allowed("proxy.routing", "health.shard.decide") and not allowed("proxy.routing", "health.shard.controller")
    probe = tmp_path / "probe.py"
    probe.write_text("from proxy.process.metrics import LATENCY_BUCKETS\nfrom . import decide\n"
                     "from ..process import server\n")
    assert crossings(probe, "health.shard.probe") == ["health.shard.probe imports proxy.process.metrics"]
    assert crossings(probe, "proxy.routing.probe") == ["proxy.routing.probe imports proxy.process",
                                                       "proxy.routing.probe imports proxy.process.metrics"]

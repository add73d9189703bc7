"""Configuration: one TOML file, every key overridable by a flag and an env var.

Precedence (lowest to highest): built-in default, TOML file, environment
(`REDIS_RAFT_PROXY_<KEY>`), command-line flag (`--key-with-dashes`).  Every
value is validated at start-up; a bad or unknown key raises `ConfigError`
naming it, which the CLI turns into exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from raft.auth import secret_matches

ENV_PREFIX = "REDIS_RAFT_PROXY_"


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; names the key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config key {key!r}: {message}")
        self.key = key


def parse_addr(value: str) -> tuple[str, int]:
    """Split "host:port" into (host, port); raises ValueError when malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, got {value!r}")
    return host, int(port)


_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmg]?b?)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3}


def parse_size(value: Any) -> int:
    """Accept 1024, "1024", "64mb", "1gb" like redis.conf does."""
    if isinstance(value, bool):
        raise ValueError("expected a size")
    if isinstance(value, int):
        return value
    m = _SIZE_RE.match(str(value))
    if not m:
        raise ValueError(f"expected a size like 512mb, got {value!r}")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    if isinstance(value, int):
        return value
    return int(str(value).strip())


def _parse_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError("expected a list of strings (or a comma-separated string)")


def _parse_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


_PARSERS: dict[type | str, Callable[[Any], Any]] = {
    "bool": _parse_bool,
    "int": _parse_int,
    "size": parse_size,
    "list": _parse_list,
    "str": _parse_str,
}


def _key(kind: str, default: Any, doc: str, *, choices: tuple[str, ...] = (), minimum: int | None = None,
         secret: bool = False) -> Any:
    meta = {"kind": kind, "doc": doc, "choices": choices, "minimum": minimum, "secret": secret}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Config:
    """Every setting of one proxy process; see config.example.toml for docs."""

    node: str = _key("str", "proxy-1", "this proxy's name, unique among the proxies")
    bind: str = _key("str", "127.0.0.1", "address the client and admin ports listen on")
    port: int = _key("int", 6380, "client port (RESP2/RESP3)", minimum=0)
    admin_port: int = _key("int", 8000, "admin HTTP port: /metrics /status /healthz /readyz and /raft/", minimum=0)
    redis_nodes: list = _key("list", ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"],
                             "the Redis nodes, host:port")
    master: str = _key("str", "", "initial master (host:port, one of redis_nodes); default: the first")
    cluster_nodes: list = _key("list", [], "cluster mode: seed nodes (host:port) of a cluster-enabled Redis/Valkey "
                               "cluster, the rest found with CLUSTER SHARDS; redis_nodes and master are then "
                               "not used (empty: a single master-replica set)")
    read_policy: str = _key("str", "replicas", "where reads go", choices=("master", "replicas", "any"))
    read_your_writes: bool = _key("bool", True, "a client's reads see its own earlier writes")
    ack: str = _key("str", "async", "acknowledge writes at once or after WAIT confirms a replica",
                    choices=("async", "replica"))
    ack_timeout_ms: int = _key("int", 1000, "WAIT timeout used by ack = replica", minimum=1)
    down_after_ms: int = _key("int", 500, "a node is subjectively down after this long without a valid reply",
                              minimum=1)
    probe_interval_ms: int = _key("int", 100, "how often each Redis node is probed", minimum=1)
    learner_probe_interval_ms: int = _key("int", 1000, "how often a Raft learner probes each Redis node (its "
                                          "view is not counted for failover)", minimum=1)
    hold_ms: int = _key("int", 5000, "how long a write waits for a master before an error", minimum=0)
    drain_timeout_ms: int = _key("int", 5000, "on SIGTERM, how long clients' commands in flight may take to be "
                                 "answered before their connections are cut", minimum=0)
    lease_ms: int = _key("int", 1000, "how long writes may flow without hearing from a quorum", minimum=1)
    stale_reads_when_partitioned: bool = _key("bool", False,
                                              "serve reads while this proxy holds no lease from a quorum")
    max_replica_staleness_ms: int = _key("int", 10000,
                                         "never promote a replica cut off from the master longer than this",
                                         minimum=0)
    shared_connections: int = _key("int", 1, "pipelined upstream connections per Redis node shared by "
                                   "stateless clients", minimum=1)
    connect_timeout_ms: int = _key("int", 1000, "timeout for connecting to a Redis node", minimum=1)
    proto_max_bulk_len: int = _key("size", 512 * 1024 * 1024, "largest bulk string a client may send", minimum=1)
    max_args: int = _key("int", 1024 * 1024, "most arguments in one command", minimum=1)
    client_output_buffer_limit: int = _key("size", 256 * 1024 * 1024,
                                           "hard limit of replies queued for one client; over it, disconnect",
                                           minimum=1)
    client_output_buffer_soft_limit: int = _key("size", 64 * 1024 * 1024,
                                                "soft limit of queued replies ...", minimum=1)
    client_output_buffer_soft_seconds: int = _key("int", 60, "... disconnect after this long over it", minimum=0)
    maxclients: int = _key("int", 10000, "most client connections at once", minimum=1)
    requirepass: str = _key("str", "", "password clients must AUTH with at the proxy (empty: none)", secret=True)
    redis_username: str = _key("str", "", "username the proxy uses towards Redis", secret=False)
    redis_password: str = _key("str", "", "password the proxy uses towards Redis", secret=True)
    # Least privilege: the proxy's own control connections (probes, REPLICAOF, CLIENT PAUSE, COMMAND,
    # SCRIPT/FUNCTION KILL) may use a Redis user of their own; client traffic keeps the one above.
    redis_control_username: str = _key("str", "", "username of the proxy's control connections to Redis "
                                       "(INFO, REPLICAOF, CLIENT PAUSE, COMMAND, SCRIPT/FUNCTION KILL); "
                                       "empty: redis_username", secret=False)
    redis_control_password: str = _key("str", "", "password of the proxy's control connections to Redis; "
                                       "empty: redis_password", secret=True)
    peers: list = _key("list", [], "the proxies as name=http://host:adminport (this one included); empty: "
                        "a single proxy without Raft")
    data_dir: str = _key("str", "", "directory for Raft hard state, log and snapshot (required with peers)")
    raft_secret: str = _key("str", "", "shared secret the proxies authenticate Raft, reports and operator "
                            "actions with (required with peers or join; make one with `openssl rand -hex 32`)",
                            secret=True)
    # -- secrets from files (mounted Kubernetes Secrets); see SECRET_FILES
    raft_secret_file: str = _key("str", "", "read raft_secret from this file (trailing newline stripped)")
    requirepass_file: str = _key("str", "", "read requirepass from this file (trailing newline stripped)")
    redis_password_file: str = _key("str", "", "read redis_password from this file (trailing newline stripped)")
    redis_control_password_file: str = _key("str", "", "read redis_control_password from this file (trailing "
                                             "newline stripped)")
    advertise_url: str = _key("str", "", "this proxy's admin URL as other proxies reach it (default: "
                              "http://bind:admin_port)")
    join: str = _key("str", "", "admin URL of a running proxy: join its cluster as a new member")
    learner: bool = _key("bool", False, "with join: join as a non-voting Raft learner (routes clients under the "
                         "same lease and fence rules, never votes; scale out beyond the 3 or 5 voters)")
    tick_ms: int = _key("int", 50, "Raft tick", minimum=1)
    election_ticks: int = _key("int", 10, "Raft election timeout in ticks (randomised up to twice that); the "
                               "write lease ends 2 ticks before it", minimum=3)
    heartbeat_ticks: int = _key("int", 2, "Raft heartbeat interval in ticks", minimum=1)
    sentinel_port: int = _key("int", 26379, "Sentinel-compatible port for Sentinel clients (0: off)", minimum=0)
    master_name: str = _key("str", "mymaster", "the master name Sentinel clients ask for")
    # -- TLS (Redis' own key names where they exist); see proxy/tls.py
    tls_port: int = _key("int", 0, "client port speaking TLS (0: off); set port = 0 for TLS only", minimum=0)
    tls_cert_file: str = _key("str", "", "this proxy's certificate (PEM) for tls_port, tls_sentinel and tls_admin")
    tls_key_file: str = _key("str", "", "the private key of tls_cert_file (PEM)")
    tls_ca_cert_file: str = _key("str", "", "CA that client certificates (and, with tls_admin, the other "
                                 "proxies' certificates) must be signed by")
    tls_auth_clients: str = _key("str", "yes", "client certificates on tls_port: yes = required, optional = "
                                 "verified when sent, no = not asked for", choices=("yes", "no", "optional"))
    tls_protocols: str = _key("str", "", "TLS versions allowed, e.g. \"TLSv1.2 TLSv1.3\" (default: TLSv1.2 and up)")
    tls_ciphers: str = _key("str", "", "OpenSSL cipher list for TLSv1.2 (default: OpenSSL's)")
    tls_sentinel: bool = _key("bool", False, "the Sentinel-compatible port speaks TLS (tls_cert_file ...)")
    tls_admin: bool = _key("bool", False, "the admin/Raft port serves HTTPS with tls_cert_file; peers are "
                           "https:// URLs verified against tls_ca_cert_file, which this proxy's certificate "
                           "is presented to as a client certificate; a client certificate signed by that CA "
                           "authenticates /admin and /raft requests like the secret")
    tls_upstream: bool = _key("bool", False, "connect to the Redis nodes over TLS (their tls-port)")
    tls_upstream_ca_cert_file: str = _key("str", "", "CA the Redis nodes' certificates are checked against "
                                          "(empty: the system CAs)")
    tls_upstream_cert_file: str = _key("str", "", "client certificate the proxy presents to Redis (needed "
                                       "when Redis runs with tls-auth-clients yes)")
    tls_upstream_key_file: str = _key("str", "", "the private key of tls_upstream_cert_file")
    tls_upstream_check_hostname: bool = _key("bool", True, "check that a Redis node's certificate names the "
                                             "host of its address in redis_nodes")
    tls_handshake_timeout_ms: int = _key("int", 5000, "a client's TLS handshake must finish within this",
                                         minimum=1)
    command_metrics: bool = _key("bool", True, "count commands and time them per class on the hot path "
                                 "(off: /metrics keeps everything else)")
    dataplane: str = _key("str", "auto", "who forwards plain clients' reads and writes: c (a thread of the C "
                          "extension; single-set mode, plaintext to the nodes), python (the event loop), or "
                          "auto: c where it can serve, else python (see docs/design.md)",
                          choices=("auto", "python", "c"))
    log_format: str = _key("str", "kv", "log line format: kv (logfmt) or json, event fields as top-level keys",
                         choices=("kv", "json"))
    log_level: str = _key("str", "info", "log level", choices=("debug", "info", "warning", "error"))

    # where each value came from (load_config fills it): key -> file / env / flag; absent: default
    sources: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        for problem in self._read_secret_files():
            raise problem
        self.validate()

    @classmethod
    def problems_of(cls, values: Mapping[str, Any]) -> list[ConfigError]:
        """Every problem of a configuration made of `values` (already parsed), instead of
        the first one only (`check-config`)."""
        cfg = cls.__new__(cls)
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            setattr(cfg, f.name, values.get(f.name, default))
        return [*cfg._read_secret_files(), *cfg.problems()]

    def _read_secret_files(self) -> Iterator[ConfigError]:
        """Fill each secret from its `*_file` key (not both with different values: which one
        wins would be a guess); yields what is wrong."""
        for file_key, key in SECRET_FILES.items():
            path = getattr(self, file_key)
            if not path:
                continue
            try:
                value = read_secret_file(file_key, path)
            except ConfigError as exc:
                yield exc
                continue
            if getattr(self, key) and not secret_matches(getattr(self, key), value):
                yield ConfigError(file_key, f"set either {key} or {file_key}, not both")
                continue
            setattr(self, key, value)

    # -- validation -------------------------------------------------------
    def validate(self) -> None:
        """Raise the first problem (see `problems`)."""
        for problem in self.problems():
            raise problem

    def problems(self) -> Iterator[ConfigError]:
        """Every value that is wrong, each as a ConfigError naming its key."""
        for f in dataclasses.fields(self):
            yield from value_problems(f.name, getattr(self, f.name))
        if not self.redis_nodes:
            yield ConfigError("redis_nodes", "at least one Redis node is required")
        for addr in self.redis_nodes:
            try:
                parse_addr(addr)
            except ValueError as exc:
                yield ConfigError("redis_nodes", str(exc))
        if len(set(self.redis_nodes)) != len(self.redis_nodes):
            yield ConfigError("redis_nodes", "duplicate address")
        for addr in self.cluster_nodes:
            try:
                parse_addr(addr)
            except ValueError as exc:
                yield ConfigError("cluster_nodes", str(exc))
        if self.master and self.master not in self.redis_nodes:
            yield ConfigError("master", f"{self.master!r} is not one of redis_nodes")
        names = []
        for peer in self.peers:
            name, sep, url = peer.partition("=")
            if not sep or not name or not url.startswith("http"):
                yield ConfigError("peers", f"expected name=http://host:port, got {peer!r}")
            names.append(name)
        if self.join and not self.peers:
            yield ConfigError("peers", "--join needs --peers listing the current members (and this proxy), "
                              "so that this proxy can reach them")
        if self.learner and not self.join:
            yield ConfigError("learner", "only with --join: a learner is added to a running cluster by its "
                              "leader (a proxy listed in peers bootstraps as a voter)")
        if self.peers and self.node not in names and not self.join:
            yield ConfigError("peers", f"this proxy ({self.node!r}) is not among the peers")
        if (self.peers or self.join) and not self.data_dir:
            yield ConfigError("data_dir", "required when peers or join are set")
        if (self.peers or self.join) and not self.raft_secret:
            yield ConfigError("raft_secret", "required when peers or join are set: anyone reaching the admin "
                              f"port could otherwise fail the cluster over. {how_to_set('raft_secret')}")
        for f in dataclasses.fields(self):
            if f.metadata["secret"] and is_placeholder(getattr(self, f.name)):
                yield ConfigError(f.name, f"is a placeholder value, not a secret. {how_to_set(f.name)}")
        if (problem := probe_interval_problem(self.probe_interval_ms, self.down_after_ms)) is not None:
            yield problem
        if self.dataplane == "c":
            yield from _dataplane_problems(self)
        if self.heartbeat_ticks >= self.election_ticks:
            yield ConfigError("heartbeat_ticks", "must be smaller than election_ticks")
        elif (problem := heartbeat_lease_problem(self)) is not None:
            yield problem
        if not re.match(r"^[!-~]+$", self.master_name):
            yield ConfigError("master_name", "must be a non-empty name without spaces")
        if self.sentinel_port and self.sentinel_port in (self.port, self.admin_port):
            yield ConfigError("sentinel_port", "must differ from port and admin_port")
        yield from self._tls_problems()
        if not self.node or not re.match(r"^[A-Za-z0-9_.-]+$", self.node):
            yield ConfigError("node", "must be a non-empty name of letters, digits, '.', '_' or '-'")

    def _tls_problems(self) -> Iterator[ConfigError]:
        from ..tls import protocol_range

        try:
            protocol_range(self.tls_protocols)
        except ValueError as exc:
            yield ConfigError("tls_protocols", str(exc))
        if not self.port and not self.tls_port:
            yield ConfigError("port", "port and tls_port are both 0: no client port")
        ports = {"port": self.port, "admin_port": self.admin_port, "sentinel_port": self.sentinel_port}
        for key, value in ports.items():
            if self.tls_port and value == self.tls_port:
                yield ConfigError("tls_port", f"must differ from {key}")
        serves_tls = [k for k in ("tls_port", "tls_sentinel", "tls_admin") if getattr(self, k)]
        if serves_tls and not (self.tls_cert_file and self.tls_key_file):
            yield ConfigError("tls_cert_file", f"{serves_tls[0]} needs tls_cert_file and tls_key_file")
        if self.tls_admin and not self.tls_ca_cert_file:
            yield ConfigError("tls_ca_cert_file", "tls_admin needs it, to verify the other proxies")
        if self.tls_port and self.tls_auth_clients != "no" and not self.tls_ca_cert_file:
            yield ConfigError("tls_ca_cert_file", f"tls_auth_clients = {self.tls_auth_clients} needs it (or set "
                              "tls_auth_clients = no)")
        if bool(self.tls_upstream_cert_file) != bool(self.tls_upstream_key_file):
            yield ConfigError("tls_upstream_key_file", "set both tls_upstream_cert_file and tls_upstream_key_file")
        scheme = "https://" if self.tls_admin else "http://"
        for key, urls in (("peers", [p.partition("=")[2] for p in self.peers]), ("join", [self.join]),
                          ("advertise_url", [self.advertise_url])):
            bad = [u for u in urls if u and not u.startswith(scheme)]
            if bad:
                yield ConfigError(key, f"{bad[0]!r}: with tls_admin = {str(self.tls_admin).lower()} the admin "
                                  f"URLs start with {scheme}")

    @property
    def admin_scheme(self) -> str:
        return "https" if self.tls_admin else "http"

    @property
    def control_username(self) -> str:
        """The Redis username of the control connections (falls back to the data user)."""
        return self.redis_control_username or self.redis_username

    @property
    def control_password(self) -> str:
        """The Redis password of the control connections (falls back to the data password)."""
        return self.redis_control_password or self.redis_password

    @property
    def peer_urls(self) -> dict[str, str]:
        return dict(p.split("=", 1) for p in self.peers)

    @property
    def lease_ticks(self) -> int:
        """The write lease in Raft ticks: lease_ms, but always shorter than the election timeout."""
        return max(1, min(self.lease_ms // self.tick_ms, self.election_ticks - 2))

    @property
    def cluster_mode(self) -> bool:
        """Fronting a sharded Redis/Valkey Cluster (issue 14), not one master-replica set."""
        return bool(self.cluster_nodes)

    @property
    def initial_master(self) -> str:
        return self.master or self.redis_nodes[0]

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict with secrets masked, safe to log or serve."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = "***" if f.metadata["secret"] and value else value
        return out


def probe_interval_problem(probe_interval_ms: int, down_after_ms: int) -> ConfigError | None:
    """Probes `down_after_ms` or more apart make a node that answers every probe look down
    between two (at start-up, and for the pair Raft's dynamic configuration makes)."""
    if 0 < down_after_ms <= probe_interval_ms:      # (a negative one is reported as such)
        return ConfigError("probe_interval_ms", f"must be smaller than down_after_ms ({down_after_ms}): a node "
                           "answering every probe would otherwise look down between two")
    return None


def value_problems(key: str, value: Any) -> Iterator[ConfigError]:
    """What is wrong with one key's parsed value on its own (choices, minimum): the
    start-up checks, shared with `config set` (proxy/process/dynamic_config.py)."""
    meta = {f.name: f for f in dataclasses.fields(Config)}[key].metadata
    if meta["choices"] and value not in meta["choices"]:
        yield ConfigError(key, f"must be one of {', '.join(meta['choices'])}, got {value!r}")
    if meta["minimum"] is not None and value < meta["minimum"]:
        yield ConfigError(key, f"must be >= {meta['minimum']}, got {value!r}")


def how_to_set(key: str) -> str:
    """The hint that goes with a missing or placeholder secret."""
    return (f"Make one with `openssl rand -hex 32` and set it with {ENV_PREFIX}{key.upper()}, "
            f"{key}_file (a file, e.g. a mounted Secret) or {key} in the config file")


# the key naming a file -> the secret read from that file
SECRET_FILES = {"raft_secret_file": "raft_secret", "requirepass_file": "requirepass",
                "redis_password_file": "redis_password", "redis_control_password_file": "redis_control_password"}

# "change-me-raft-secret" in k8s/base/secret.env and its kin: a value copied
# from an example is public, so it must not open the cluster.
_PLACEHOLDER_RE = re.compile(r"change[-_ .]?me|^(secret|password|placeholder|xxx+)$", re.IGNORECASE)


def is_placeholder(value: str) -> bool:
    """True for a known example value that must never be used as a secret."""
    return bool(value) and bool(_PLACEHOLDER_RE.search(value.strip()))


def read_secret_file(key: str, path: str) -> str:
    """The file's content without its trailing newlines; ConfigError naming `key` if
    it cannot be read or is empty (never the content itself)."""
    try:
        with open(path, encoding="utf-8") as fh:
            value = fh.read().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(key, f"cannot read {path}: {reason}") from None
    if not value:
        raise ConfigError(key, f"{path} is empty")
    return value


def _coerce(key: str, raw: Any) -> Any:
    fields = {f.name: f for f in dataclasses.fields(Config)}
    if key not in fields:
        raise ConfigError(key, "unknown key")
    try:
        return _PARSERS[fields[key].metadata["kind"]](raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(key, str(exc)) from None


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Add --config and one --key-with-dashes flag per key (all default None)."""
    parser.add_argument("--config", "-c", help="TOML configuration file (default: none; built-in defaults, then "
                        "REDIS_RAFT_PROXY_* variables, then flags)")
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        meta = f.metadata
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        shown = ",".join(default) if isinstance(default, list) else str(default).lower() \
            if isinstance(default, bool) else default
        # the default shown is the built-in one (the flag's own is None: not given, so the file's value stays)
        # a bool flag alone means true (--learner); --flag false still works
        bare = {"nargs": "?", "const": "true"} if meta["kind"] == "bool" else {}
        parser.add_argument(flag, dest=f"cfg_{f.name}", default=None, choices=meta["choices"] or None, **bare,
                            metavar=None if meta["choices"] else meta["kind"].upper(),
                            help=f"{meta['doc']} (default: {shown!r})".replace("%", "%%"))


def flags_from_args(args: argparse.Namespace) -> dict[str, str]:
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}


def _read_values(path: str | None, env: Mapping[str, str] | None, flags: Mapping[str, Any] | None,
                 errors: list[ConfigError] | None = None) -> dict[str, Any]:
    """The parsed values from file, environment and flags (later wins). Each problem is
    raised, or, given `errors`, appended to it (the key then keeps its default)."""
    def bad(exc: ConfigError) -> None:
        if errors is None:
            raise exc
        errors.append(exc)

    def coerce(key: str, raw: Any, values: dict[str, Any]) -> None:
        try:
            values[key] = _coerce(key, raw)
        except ConfigError as exc:
            bad(exc)

    values: dict[str, Any] = {}
    if path:
        data: dict[str, Any] = {}
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            bad(ConfigError("config", f"file not found: {path}"))
        except OSError as exc:
            bad(ConfigError("config", f"cannot read {path}: {exc.strerror or type(exc).__name__}"))
        except tomllib.TOMLDecodeError as exc:
            bad(ConfigError("config", f"{path} is not valid TOML: {exc}"))
        for key, raw in data.items():
            coerce(key, raw, values)
    env = os.environ if env is None else env
    known = {f.name for f in dataclasses.fields(Config)}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX):].lower()
        if key not in known:
            bad(ConfigError(key, f"unknown key (from environment variable {name})"))
            continue
        coerce(key, raw, values)
    for key, raw in (flags or {}).items():
        coerce(key, raw, values)
    return values


def load_config(path: str | None = None, *, env: Mapping[str, str] | None = None,
                flags: Mapping[str, Any] | None = None) -> Config:
    """Build a validated Config from file, environment and flags; `cfg.sources` says
    where each value not at its default came from."""
    cfg = Config(**_read_values(path, env, flags))
    cfg.sources = value_sources(path, env, flags)
    return cfg


def value_sources(path: str | None, env: Mapping[str, str] | None,
                  flags: Mapping[str, Any] | None) -> dict[str, str]:
    """key -> "file", "env" or "flag": the layer its value comes from (a key absent: "default")."""
    out: dict[str, str] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                out.update({k: "file" for k in tomllib.load(fh)})
        except (OSError, tomllib.TOMLDecodeError):
            pass
    env = os.environ if env is None else env
    out.update({n[len(ENV_PREFIX):].lower(): "env" for n in env if n.startswith(ENV_PREFIX)})
    out.update({k: "flag" for k in flags or {}})
    return out


def config_problems(path: str | None = None, *, env: Mapping[str, str] | None = None,
                    flags: Mapping[str, Any] | None = None) -> list[ConfigError]:
    """Every problem `load_config` would find, not only the first (`check-config`)."""
    errors: list[ConfigError] = []
    values = _read_values(path, env, flags, errors)
    if errors and errors[0].key == "config":       # no file, or not TOML: nothing more to say
        return errors
    return errors + Config.problems_of(values)


def heartbeat_lease_problem(cfg: Config) -> ConfigError | None:
    """A follower's lease runs `lease_ticks` from its reply to the heartbeat before the one
    that renews it (raft.lease: the leader echoes that reply), so it is renewed in time only
    if two heartbeat periods are shorter than the lease, even with no latency at all. With
    longer periods every follower and learner would lose its lease between two heartbeats,
    idle or not, and hold its clients' writes (what the simulation in tests/sim shows)."""
    lease = cfg.lease_ticks
    if 2 * cfg.heartbeat_ticks < lease:
        return None
    fix = f"set heartbeat_ticks to at most {(lease - 1) // 2}" if lease >= 3 else "raise lease_ms (and election_ticks)"
    return ConfigError("heartbeat_ticks", f"{cfg.heartbeat_ticks} ticks between heartbeats is too long for the write "
                       f"lease of {lease} ticks (lease_ms {cfg.lease_ms} at tick_ms {cfg.tick_ms}, at most "
                       f"election_ticks - 2): a follower's lease, counted from its answer to the heartbeat before, "
                       f"would run out between two heartbeats and hold its writes; {fix}")


def _dataplane_problems(cfg: Config) -> Iterator[ConfigError]:
    """dataplane = "c" needs the compiled extension, and serves the single set only, over
    plaintext connections to the nodes."""
    if cfg.cluster_mode:
        yield ConfigError("dataplane", "\"c\" serves the single-set mode only (cluster mode forwards in Python)")
    if cfg.tls_upstream:
        yield ConfigError("dataplane", "\"c\" connects to the nodes in plaintext; with tls_upstream use \"python\" "
                          "or \"auto\"")
    if (problem := _extension_missing()) is not None:
        yield ConfigError("dataplane", f"\"c\" needs the C extension proxy.dataplane._fastpath, which is not built "
                          f"here ({problem}); reinstall with a C compiler, or use \"python\"")


def _extension_missing() -> str | None:
    try:
        from ..dataplane import _fastpath  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


def uses_c_dataplane(cfg: Config) -> bool:
    """The C thread forwards plain clients: `dataplane = "c"` (its problems were checked),
    or `auto` where the thread can serve (single-set mode, plaintext to the nodes, the
    extension built); else, and with `python`, the event loop does."""
    if cfg.dataplane != "auto":
        return cfg.dataplane == "c"
    return not cfg.cluster_mode and not cfg.tls_upstream and _extension_missing() is None

"""Throwaway certificates for `demo --tls` and the tests, made with the openssl CLI.

Never for production: the CA key sits beside the certificates. Each call makes
a CA, then leaf certificates for 127.0.0.1 / localhost signed by it, each usable
as a server and as a client certificate (Redis uses one certificate for both
roles, as do the proxies).
"""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..tls import TlsFiles

_SAN = "subjectAltName=IP:127.0.0.1,DNS:localhost"
_USAGE = "extendedKeyUsage=serverAuth,clientAuth"
# P-256 keys: an RSA 2048 key takes about 0.3 s to make, and the tests make dozens
_NEW_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")


class CertError(RuntimeError):
    pass


@dataclass(frozen=True)
class Leaf:
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    try:
        subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)
    except FileNotFoundError:
        raise CertError("the openssl command is needed to make certificates (apt-get install openssl)") from None
    except subprocess.CalledProcessError as exc:
        raise CertError(f"openssl {args[0]} failed: {exc.stderr.decode(errors='replace').strip()}") from None


class DevCA:
    """A CA in `directory` (ca.crt, ca.key) that signs leaves on demand."""

    def __init__(self, directory: Path, name: str = "redis-raft-proxy dev CA") -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cert = self.dir / "ca.crt"
        self.key = self.dir / "ca.key"
        if not self.cert.exists():
            _openssl("req", "-x509", *_NEW_KEY, "-nodes", "-keyout", self.key.name, "-out",
                     self.cert.name, "-days", "3650", "-subj", f"/CN={name}", cwd=self.dir)

    def leaf(self, name: str, *, days: int = 825, not_yet_valid: bool = False, expired: bool = False) -> Leaf:
        """`name`.crt / `name`.key for 127.0.0.1 and localhost. `expired` makes one whose
        validity ended yesterday (openssl x509 cannot back-date, so `ca` is used)."""
        key, csr, crt = f"{name}.key", f"{name}.csr", f"{name}.crt"
        _openssl("req", *_NEW_KEY, "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={name}",
                 cwd=self.dir)
        ext = self.dir / f"{name}.ext"
        ext.write_text(f"{_SAN}\n{_USAGE}\n")
        if expired or not_yet_valid:
            start, end = ("20200101000000Z", "20200102000000Z") if expired else ("20990101000000Z", "20991231000000Z")
            self._ca_sign(csr, crt, ext, start, end)
        else:
            _openssl("x509", "-req", "-in", csr, "-CA", self.cert.name, "-CAkey", self.key.name,
                     "-CAcreateserial", "-out", crt, "-days", str(days), "-extfile", ext.name, cwd=self.dir)
        return Leaf(self.dir / crt, self.dir / key)

    def _ca_sign(self, csr: str, crt: str, ext: Path, start: str, end: str) -> None:
        db = self.dir / "ca-db"
        db.mkdir(exist_ok=True)
        (db / "index.txt").touch()
        serial = db / "serial"
        if not serial.exists():
            serial.write_text("1000\n")
        conf = db / "ca.cnf"
        conf.write_text(f"""[ca]
default_ca = dev
[dev]
dir = {db}
database = $dir/index.txt
serial = $dir/serial
new_certs_dir = $dir
certificate = {self.cert}
private_key = {self.key}
default_md = sha256
policy = any
unique_subject = no
[any]
commonName = supplied
""")
        _openssl("ca", "-batch", "-config", str(conf), "-in", csr, "-out", crt, "-startdate", start, "-enddate", end,
                 "-extfile", ext.name, "-notext", cwd=self.dir)


def redis_tls_args(files: TlsFiles, tls_port: int) -> list[str]:
    """redis-server flags: TLS on `tls_port`, replication over TLS, client certificates required."""
    return ["--tls-port", str(tls_port), "--tls-cert-file", str(files.cert), "--tls-key-file", str(files.key),
            "--tls-ca-cert-file", str(files.ca), "--tls-replication", "yes", "--tls-auth-clients", "yes"]


def config_flags(options: dict[str, Any]) -> list[str]:
    """Config keys as `redis-raft-proxy run` flags: {"tls_admin": True} -> ["--tls-admin", "true"]."""
    flags: list[str] = []
    for key, value in options.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        flags += ["--" + key.replace("_", "-"), text]
    return flags


@dataclass
class ClusterCerts:
    """A CA with one certificate for the Redis nodes, one for the proxies and one for clients
    (`demo --tls`, the TLS benchmark and the tests)."""

    ca: DevCA
    redis: Leaf
    proxy: Leaf
    client: Leaf

    @classmethod
    def make(cls, directory: Path) -> ClusterCerts:
        ca = DevCA(Path(directory))
        return cls(ca, ca.leaf("redis"), ca.leaf("proxy"), ca.leaf("client"))

    def redis_files(self) -> TlsFiles:
        return TlsFiles(str(self.redis.cert), str(self.redis.key), str(self.ca.cert))

    def redis_args(self, tls_port: int) -> list[str]:
        """redis-server flags for a node serving TLS on `tls_port` (add `--port 0` for TLS only)."""
        return redis_tls_args(self.redis_files(), tls_port)

    def proxy_options(self, *, admin: bool = True, sentinel: bool = False) -> dict[str, Any]:
        """tls_* keys for a proxy: TLS to Redis, and HTTPS between the proxies with `admin`."""
        opts: dict[str, Any] = {
            "tls_cert_file": str(self.proxy.cert), "tls_key_file": str(self.proxy.key),
            "tls_ca_cert_file": str(self.ca.cert), "tls_upstream": True,
            "tls_upstream_ca_cert_file": str(self.ca.cert), "tls_upstream_cert_file": str(self.proxy.cert),
            "tls_upstream_key_file": str(self.proxy.key)}
        if admin:
            opts["tls_admin"] = True
        if sentinel:
            opts["tls_sentinel"] = True
        return opts

    def client_context(self, leaf: Leaf | None = None) -> ssl.SSLContext:
        """A client context trusting the CA and presenting `leaf` (default: the client certificate)."""
        leaf = leaf or self.client
        ctx = ssl.create_default_context(cafile=str(self.ca.cert))
        ctx.load_cert_chain(str(leaf.cert), str(leaf.key))
        return ctx

    def redis_py_kwargs(self, leaf: Leaf | None = None) -> dict[str, Any]:
        """redis-py connection arguments: TLS, trusting the CA, presenting `leaf` (default: client)."""
        leaf = leaf or self.client
        return {"ssl": True, "ssl_ca_certs": str(self.ca.cert), "ssl_certfile": str(leaf.cert),
                "ssl_keyfile": str(leaf.key)}

    def cli_args(self, leaf: Leaf | None = None) -> list[str]:
        """The --cacert/--cert/--key arguments of redis-cli, redis-benchmark and our operator CLI."""
        leaf = leaf or self.client
        return ["--cacert", str(self.ca.cert), "--cert", str(leaf.cert), "--key", str(leaf.key)]

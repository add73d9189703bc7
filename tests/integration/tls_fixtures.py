"""Certificates and settings for tests (and benchmarks) that run every hop over TLS."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from proxy.devcerts import DevCA, Leaf
from proxy.tls import TlsFiles


@dataclass
class TestTls:
    """A CA with one certificate for the Redis nodes, one for the proxies and one for clients."""

    __test__ = False        # not a pytest class

    ca: DevCA
    redis: Leaf
    proxy: Leaf
    client: Leaf

    @classmethod
    def make(cls, directory: Path) -> "TestTls":
        ca = DevCA(Path(directory))
        return cls(ca, ca.leaf("redis"), ca.leaf("proxy"), ca.leaf("client"))

    def redis_files(self) -> TlsFiles:
        return TlsFiles(str(self.redis.cert), str(self.redis.key), str(self.ca.cert))

    def proxy_options(self, *, admin: bool = True, sentinel: bool = False) -> dict:
        """tls_* keys for a proxy: TLS to Redis, and HTTPS between the proxies with `admin`."""
        opts = {"tls_cert_file": str(self.proxy.cert), "tls_key_file": str(self.proxy.key),
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

    def redis_py_kwargs(self, leaf: Leaf | None = None) -> dict:
        leaf = leaf or self.client
        return {"ssl": True, "ssl_ca_certs": str(self.ca.cert), "ssl_certfile": str(leaf.cert),
                "ssl_keyfile": str(leaf.key)}

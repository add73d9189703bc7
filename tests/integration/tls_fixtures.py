"""Certificates and settings for tests that run every hop over TLS."""

from __future__ import annotations

import ssl

from proxy.devcerts import ClusterCerts, Leaf


class TestTls(ClusterCerts):
    """A CA with one certificate for the Redis nodes, one for the proxies and one for clients."""

    __test__ = False        # not a pytest class

    def client_context(self, leaf: Leaf | None = None) -> ssl.SSLContext:
        """A client context trusting the CA and presenting `leaf` (default: the client certificate)."""
        leaf = leaf or self.client
        ctx = ssl.create_default_context(cafile=str(self.ca.cert))
        ctx.load_cert_chain(str(leaf.cert), str(leaf.key))
        return ctx

"""Certificates and settings for tests that run every hop over TLS."""

from __future__ import annotations

from proxy.process.devcerts import ClusterCerts


class TestTls(ClusterCerts):
    """A CA with one certificate for the Redis nodes, one for the proxies and one for clients."""

    __test__ = False        # not a pytest class

"""Credential checks shared by every endpoint that takes a secret.

One rule for the Raft RPC, the operator routes, the health reports and the
proxy's `requirepass`: the comparison is constant-time (no timing leak of how
many leading bytes matched) and an empty or missing credential never
authenticates anything, even against an empty configured secret (a proxy
without a secret refuses these requests instead of accepting them all).
"""

from __future__ import annotations

import hmac

SECRET_HEADER = "X-Raft-Secret"


def secret_matches(given: str | bytes | None, expected: str | bytes | None) -> bool:
    """True only if both are non-empty and equal, compared in constant time."""
    if not given or not expected:
        return False
    if isinstance(given, str):
        given = given.encode()
    if isinstance(expected, str):
        expected = expected.encode()
    return hmac.compare_digest(given, expected)


def peer_certificate_verified(transport) -> bool:
    """True when the connection's TLS client certificate was verified against the
    configured CA (an HTTPS server with client certificates optional: a certificate
    that fails verification fails the handshake, so one that is there passed)."""
    if transport is None:
        return False
    return bool(transport.get_extra_info("peercert"))


def request_authorized(given_secret: str | None, expected_secret: str, transport) -> bool:
    """An admin or Raft request: the shared secret, or a verified client certificate."""
    return secret_matches(given_secret, expected_secret) or peer_certificate_verified(transport)

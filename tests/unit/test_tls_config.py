"""TLS settings: validation at load time, and the contexts built from them."""

from __future__ import annotations

import ssl

import pytest

from proxy.process.config import ConfigError, load_config
from proxy.tls import (
    CertReloader,
    TlsConfigError,
    TlsFiles,
    protocol_range,
    server_context,
)


def cfg(**flags):
    return load_config(env={}, flags=flags)


@pytest.mark.parametrize("flags,key", [
    ({"port": "0"}, "port"),
    ({"tls_port": "6380"}, "tls_port"),                       # the same as port
    ({"tls_port": "6390"}, "tls_cert_file"),
    ({"tls_port": "6390", "tls_cert_file": "c", "tls_key_file": "k"}, "tls_ca_cert_file"),
    ({"tls_admin": "yes", "tls_cert_file": "c", "tls_key_file": "k"}, "tls_ca_cert_file"),
    ({"tls_sentinel": "yes"}, "tls_cert_file"),
    ({"tls_upstream": "yes", "tls_upstream_cert_file": "c"}, "tls_upstream_key_file"),
    ({"tls_protocols": "TLSv1.0"}, "tls_protocols"),
    ({"tls_auth_clients": "maybe"}, "tls_auth_clients"),
    ({"tls_admin": "yes", "tls_cert_file": "c", "tls_key_file": "k", "tls_ca_cert_file": "a",
      "peers": "p1=http://127.0.0.1:8000", "node": "p1", "data_dir": "/tmp/x", "raft_secret": "0123abcd"}, "peers"),
    ({"join": "https://127.0.0.1:8000", "peers": "proxy-1=http://127.0.0.1:8000", "data_dir": "/tmp/x",
      "raft_secret": "0123abcd"}, "join"),
])
def test_bad_tls_settings_name_the_key(flags, key):
    with pytest.raises(ConfigError) as err:
        cfg(**flags)
    assert err.value.key == key, str(err.value)


def test_tls_only_and_no_client_certificates_are_accepted():
    c = cfg(port="0", tls_port="6390", tls_cert_file="c", tls_key_file="k", tls_auth_clients="no")
    assert (c.port, c.tls_port) == (0, 6390)
    c = cfg(tls_admin="yes", tls_cert_file="c", tls_key_file="k", tls_ca_cert_file="a")
    assert c.admin_scheme == "https"


def test_protocol_range():
    assert protocol_range("") == (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.MAXIMUM_SUPPORTED)
    assert protocol_range("TLSv1.3") == (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3)
    assert protocol_range("TLSv1.3 TLSv1.2") == (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)


def test_missing_files_name_the_file_not_a_secret(tmp_path):
    with pytest.raises(TlsConfigError) as err:
        server_context(TlsFiles(str(tmp_path / "nope.crt"), str(tmp_path / "nope.key")))
    assert "nope.crt" in str(err.value) and err.value.which == "cert"


def test_reloader_keeps_the_old_certificate_when_the_new_one_does_not_load(tmp_path):
    from proxy.process.devcerts import DevCA

    ca = DevCA(tmp_path)
    a = ca.leaf("a")
    files = TlsFiles(str(a.cert), str(a.key), str(ca.cert))
    ctx = server_context(files)
    r = CertReloader()
    r.watch("clients", ctx, files)
    assert r.check() == []                          # nothing changed
    a.cert.write_text("garbage\n")                  # half-written rotation
    assert r.check() == [] and r.failures == 1
    assert r.check() == [] and r.failures == 1      # logged once, retried on every check
    b = ca.leaf("b")
    a.cert.write_bytes(b.cert.read_bytes())
    a.key.write_bytes(b.key.read_bytes())
    assert r.check() == ["clients"] and r.reloads == 1

"""The cluster CA: files and modes, what certificates carry, and real TLS 1.3 handshakes."""

from __future__ import annotations

import base64
import datetime
import os
import ssl
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from vxnet.cli import main
from vxnet.pki import CA_CERT, CA_KEY, GOSSIP_KEY, PkiError, describe, init_ca, issue, role_of

if TYPE_CHECKING:
    from pathlib import Path


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_init_writes_the_ca_and_a_gossip_key_with_secrets_0600_whatever_the_umask(
    tmp_path: Path,
) -> None:
    old = os.umask(0)
    try:
        paths = init_ca(tmp_path / "ca")
    finally:
        os.umask(old)
    assert [p.name for p in paths] == [CA_CERT, CA_KEY, GOSSIP_KEY]
    assert mode(tmp_path / "ca" / CA_KEY) == 0o600
    assert mode(tmp_path / "ca" / GOSSIP_KEY) == 0o600
    assert mode(tmp_path / "ca") == 0o700
    ca = load(tmp_path / "ca" / CA_CERT)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ca.verify_directly_issued_by(ca)
    key = base64.b64decode((tmp_path / "ca" / GOSSIP_KEY).read_bytes().strip(), validate=True)
    assert len(key) == 32


def test_init_never_replaces_a_ca_unless_forced(tmp_path: Path) -> None:
    init_ca(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(PkiError, match="exists"):
        init_ca(tmp_path)
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert main(["pki", "init", str(tmp_path)]) == 2
    init_ca(tmp_path, force=True)
    assert (tmp_path / CA_KEY).read_bytes() != before[tmp_path / CA_KEY]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_an_issued_certificate_carries_its_role_names_usages_and_expiry(tmp_path: Path) -> None:
    init_ca(tmp_path)
    issued = issue(
        tmp_path, "master", "m1", ips=["198.18.0.1", "fd00::1"], dns=["M1.Cluster."], days=30
    )
    assert mode(issued.key) == 0o600
    cert, ca = load(issued.cert), load(tmp_path / CA_CERT)
    cert.verify_directly_issued_by(ca)
    assert role_of(cert) == "master"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["m1", "m1.cluster"]
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == ["198.18.0.1", "fd00::1"]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    days = (cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)).days
    assert 29 <= days < 30
    operator = load(issue(tmp_path, "operator", "alice").cert)
    assert role_of(operator) == "operator"
    usages = operator.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert role_of(ca) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"role": "root", "name": "x"}, "role 'root'"),
        ({"role": "agent", "name": "A1"}, "name 'A1'"),
        ({"role": "agent", "name": "a1/../x"}, "name"),
        ({"role": "agent", "name": "a1", "ips": ["198.18.0.300"]}, "--ip '198.18.0.300'"),
        ({"role": "agent", "name": "a1", "dns": ["bad_name"]}, "--dns 'bad_name'"),
        ({"role": "agent", "name": "a1", "days": 0}, "days 0"),
        ({"role": "agent", "name": "a1", "days": 4000}, "the CA expires"),
    ],
)
def test_issue_refuses_what_it_cannot_honour_and_writes_nothing(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    init_ca(tmp_path, days=3650)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(PkiError, match=message):
        issue(tmp_path, **kwargs)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_issue_without_a_ca_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="vxnet pki init"):
        issue(tmp_path, "agent", "a1")


def test_rotation_replaces_a_certificate_only_when_forced(tmp_path: Path) -> None:
    init_ca(tmp_path)
    first = issue(tmp_path, "agent", "a1")
    serial = load(first.cert).serial_number
    with pytest.raises(PkiError, match="exists"):
        issue(tmp_path, "agent", "a1")
    assert load(first.cert).serial_number == serial
    again = issue(tmp_path, "agent", "a1", force=True)
    assert load(again.cert).serial_number != serial


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, host: str) -> ssl.SSLObject:
    """A real TLS handshake between the two contexts, in memory; the server's end."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    cli = client.wrap_bio(c_in, c_out, server_hostname=host)
    done = {"s": False, "c": False}
    for _ in range(20):
        for name, end in (("c", cli), ("s", srv)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            # TLS 1.3: the server learns the client's verdict on its first read.
            cli.write(b"x")
            s_in.write(c_out.read())
            assert srv.read(1) == b"x"
            return srv
    raise AssertionError("the handshake did not finish")


def _contexts(
    ca: Path, server: tuple[Path, Path], client: tuple[Path, Path]
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    s = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    s.minimum_version = ssl.TLSVersion.TLSv1_3
    s.verify_mode = ssl.CERT_REQUIRED
    s.load_verify_locations(ca)
    s.load_cert_chain(*server)
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.minimum_version = ssl.TLSVersion.TLSv1_3
    c.load_verify_locations(ca)
    c.load_cert_chain(*client)
    return s, c


def test_certificates_from_the_ca_complete_a_mutual_tls13_handshake(tmp_path: Path) -> None:
    init_ca(tmp_path)
    m1 = issue(tmp_path, "master", "m1", ips=["198.18.0.1"])
    alice = issue(tmp_path, "operator", "alice")
    server, client = _contexts(tmp_path / CA_CERT, (m1.cert, m1.key), (alice.cert, alice.key))
    end = _handshake(server, client, "198.18.0.1")
    assert end.version() == "TLSv1.3"
    der = end.getpeercert(binary_form=True)
    assert der is not None
    peer = x509.load_der_x509_certificate(der)
    assert role_of(peer) == "operator"


def test_a_certificate_from_another_ca_or_for_another_address_fails_the_handshake(
    tmp_path: Path,
) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    init_ca(ours)
    init_ca(theirs)
    m1 = issue(ours, "master", "m1", ips=["198.18.0.1"])
    mallory = issue(theirs, "operator", "mallory")
    server, client = _contexts(ours / CA_CERT, (m1.cert, m1.key), (mallory.cert, mallory.key))
    with pytest.raises(ssl.SSLError):
        _handshake(server, client, "198.18.0.1")
    alice = issue(ours, "operator", "alice")
    server, client = _contexts(ours / CA_CERT, (m1.cert, m1.key), (alice.cert, alice.key))
    with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
        _handshake(server, client, "198.18.0.2")


def test_show_describes_certificates_keys_and_gossip_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    init_ca(tmp_path)
    a1 = issue(tmp_path, "agent", "a1", ips=["198.18.0.11"], days=10)
    lines = describe(a1.cert)
    assert "role: agent" in lines
    assert "ip: 198.18.0.11" in lines
    assert any(line.startswith("valid: ") and "(9 days left)" in line for line in lines)
    assert describe(a1.key) == ["private key: EC secp256r1, mode 0600"]
    assert describe(tmp_path / GOSSIP_KEY) == ["gossip key: 32 bytes (AES-256), mode 0600"]
    assert "role: CA" in describe(tmp_path / CA_CERT)
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(PkiError, match="neither"):
        describe(tmp_path / "notes.txt")
    assert main(["pki", "show", str(a1.cert)]) == 0
    assert "role: agent" in capsys.readouterr().out
    assert main(["pki", "show", str(tmp_path / "missing.pem")]) == 2

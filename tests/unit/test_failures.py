"""The failure vocabulary: every exception a check can meet maps to one OONI string."""

from __future__ import annotations

import asyncio
import errno
import ssl

import pytest

from probe.model import failures as F


@pytest.mark.parametrize(("exc", "expected"), [
    (TimeoutError(), "generic_timeout_error"),
    (asyncio.IncompleteReadError(b"", 4), "eof_error"),
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "connection_refused"),
    (ConnectionResetError(errno.ECONNRESET, "reset"), "connection_reset"),
    (OSError(errno.EHOSTUNREACH, "no route"), "host_unreachable"),
    (OSError(errno.ENETUNREACH, "unreachable"), "network_unreachable"),
    # ICMPv6 administratively prohibited / source address failed policy / reject route
    (OSError(errno.EACCES, "Permission denied"), "host_unreachable"),
    # ICMP communication administratively prohibited, host/net prohibited (Linux: EHOSTUNREACH
    # and ENETUNREACH), host unknown, host isolated, protocol unreachable
    (OSError(errno.EHOSTDOWN, "host is down"), "host_unreachable"),
    (OSError(errno.ENONET, "not on the network"), "host_unreachable"),
    (OSError(errno.ENOPROTOOPT, "protocol not available"), "host_unreachable"),
    (OSError(errno.ECONNREFUSED, "port unreachable"), "connection_refused"),
    # the vantage's own firewall (OUTPUT DROP/REJECT) refused to send
    (OSError(errno.EPERM, "Operation not permitted"), "operation_not_permitted"),
    (ssl.SSLEOFError(), "eof_error"),
    (ssl.SSLError(1, "handshake failure"), "ssl_failed_handshake"),
    (F.ProtocolError("garbage"), "mtproto_unexpected_response"),
    (F.UnexpectedStatus("HTTP 403"), "http_unexpected_status"),
    (ValueError("something else"), "unknown_failure"),
])
def test_classify(exc: BaseException, expected: str) -> None:
    assert F.classify(exc) == expected
    assert expected in F.FAILURES


def test_certificate_errors_by_verify_code() -> None:
    def cert_error(code: int) -> ssl.SSLCertVerificationError:
        exc = ssl.SSLCertVerificationError(1, "verify failed")
        exc.verify_code = code
        return exc

    assert F.classify(cert_error(62)) == "ssl_invalid_hostname"
    assert F.classify(cert_error(20)) == "ssl_unknown_authority"
    assert F.classify(cert_error(10)) == "ssl_invalid_certificate"  # expired


def test_cause_is_followed() -> None:
    try:
        try:
            raise ConnectionResetError(errno.ECONNRESET, "reset")
        except ConnectionResetError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert F.classify(outer) == "connection_reset"

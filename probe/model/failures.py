"""The failure vocabulary: the one place that turns exceptions into failure strings.

The strings are OONI's (df-007-errors), so analysts can put reach's data next to OONI's.
Checks never invent strings of their own: they raise or catch, then call `classify`.
"""

from __future__ import annotations

import asyncio
import errno
import ssl
import sys
from typing import Final

GENERIC_TIMEOUT: Final = "generic_timeout_error"
CONNECTION_REFUSED: Final = "connection_refused"
CONNECTION_RESET: Final = "connection_reset"
EOF_ERROR: Final = "eof_error"
HOST_UNREACHABLE: Final = "host_unreachable"
NETWORK_UNREACHABLE: Final = "network_unreachable"
OPERATION_NOT_PERMITTED: Final = "operation_not_permitted"
DNS_NXDOMAIN: Final = "dns_nxdomain_error"
DNS_NO_ANSWER: Final = "dns_no_answer"
DNS_SERVFAIL: Final = "dns_servfail_error"
DNS_REFUSED: Final = "dns_refused_error"
DNS_BOGON: Final = "dns_bogon_error"
SSL_INVALID_HOSTNAME: Final = "ssl_invalid_hostname"
SSL_UNKNOWN_AUTHORITY: Final = "ssl_unknown_authority"
SSL_INVALID_CERTIFICATE: Final = "ssl_invalid_certificate"
SSL_FAILED_HANDSHAKE: Final = "ssl_failed_handshake"
MTPROTO_UNEXPECTED_RESPONSE: Final = "mtproto_unexpected_response"
HTTP_UNEXPECTED_STATUS: Final = "http_unexpected_status"
# WhatsApp's Noise handshake: the answer to the prologue and ClientHello is not a
# ServerHello keyed to our ephemeral key (garbage, a blockpage, a protocol the middlebox
# speaks), or it is one whose certificate chain does not lead to WhatsApp's root key (a
# server that cannot prove WhatsApp's identity: an interceptor). A reset or silence after
# the prologue keeps OONI's connection_reset / eof_error / generic_timeout, with the
# operation noise_handshake saying at which stage.
NOISE_UNEXPECTED_RESPONSE: Final = "noise_unexpected_response"
NOISE_INVALID_CERTIFICATE: Final = "noise_invalid_certificate"
UNKNOWN_FAILURE: Final = "unknown_failure"

FAILURES: Final = (
    GENERIC_TIMEOUT, CONNECTION_REFUSED, CONNECTION_RESET, EOF_ERROR, HOST_UNREACHABLE,
    NETWORK_UNREACHABLE, DNS_NXDOMAIN, DNS_NO_ANSWER, DNS_SERVFAIL, DNS_REFUSED, DNS_BOGON,
    SSL_INVALID_HOSTNAME, SSL_UNKNOWN_AUTHORITY, SSL_INVALID_CERTIFICATE, SSL_FAILED_HANDSHAKE,
    MTPROTO_UNEXPECTED_RESPONSE, HTTP_UNEXPECTED_STATUS, NOISE_UNEXPECTED_RESPONSE,
    NOISE_INVALID_CERTIFICATE, UNKNOWN_FAILURE, OPERATION_NOT_PERMITTED,
)

# The operation that failed, paired with every failure string.
RESOLVE: Final = "resolve"
CONNECT: Final = "connect"
TLS_HANDSHAKE: Final = "tls_handshake"
MTPROTO_HANDSHAKE: Final = "mtproto_handshake"
HTTP_ROUND_TRIP: Final = "http_round_trip"
NOISE_HANDSHAKE: Final = "noise_handshake"

# Failures that a certificate check produces: the peer answered TLS with a certificate
# we cannot trust for the name (what an intercepting middlebox causes).
CERTIFICATE_FAILURES: Final = frozenset(
    {SSL_INVALID_HOSTNAME, SSL_UNKNOWN_AUTHORITY, SSL_INVALID_CERTIFICATE}
)


class ProtocolError(Exception):
    """The peer answered, but not in the service's protocol (a middlebox, a wrong host)."""

    failure = MTPROTO_UNEXPECTED_RESPONSE


class NoiseResponseError(Exception):
    """The answer to WhatsApp's prologue and ClientHello is not a usable ServerHello."""

    failure = NOISE_UNEXPECTED_RESPONSE


class NoiseCertificateError(Exception):
    """A ServerHello whose certificate chain does not prove WhatsApp's key."""

    failure = NOISE_INVALID_CERTIFICATE


class UnexpectedStatus(Exception):
    """An HTTP server answered with a status the check does not accept."""

    failure = HTTP_UNEXPECTED_STATUS


# Rejects a router sends (ICMP and ICMPv6 destination unreachable) arrive as errnos; Linux
# converts them (net/ipv4/icmp.c icmp_err_convert, net/ipv6/icmp.c tab_unreach):
#   ICMP net unreachable / net unknown / net prohibited (9) / net for TOS   -> ENETUNREACH
#   ICMP host unreachable / host prohibited (10) / communication
#        administratively prohibited (13, iptables icmp-admin-prohibited) /
#        precedence violation or cutoff                                    -> EHOSTUNREACH
#   ICMP host unknown -> EHOSTDOWN; host isolated -> ENONET; protocol unreachable -> ENOPROTOOPT
#   ICMP port unreachable, ICMPv6 port unreachable                          -> ECONNREFUSED
#   ICMPv6 no route -> ENETUNREACH; beyond scope / address unreachable      -> EHOSTUNREACH
#   ICMPv6 administratively prohibited (1), source address failed policy
#        (5), reject route (6)                                              -> EACCES
# Every one of them is a router refusing to carry the packet, so every one names the
# address as unreachable (the classifier's `connect_timeout` rule: ip_blocking); IPv6's
# admin-prohibited must read as IPv4's does. EPERM is different: it is the vantage's own
# host refusing to send (a local firewall's DROP/REJECT in OUTPUT), not anything on the path.
_ERRNO_FAILURES: Final = {
    errno.ECONNREFUSED: CONNECTION_REFUSED,
    errno.ECONNRESET: CONNECTION_RESET,
    errno.ECONNABORTED: CONNECTION_RESET,
    errno.EPIPE: CONNECTION_RESET,
    errno.EHOSTUNREACH: HOST_UNREACHABLE,
    errno.EHOSTDOWN: HOST_UNREACHABLE,
    errno.EACCES: HOST_UNREACHABLE,
    errno.ENONET: HOST_UNREACHABLE,
    errno.ENOPROTOOPT: HOST_UNREACHABLE,
    errno.EPERM: OPERATION_NOT_PERMITTED,
    errno.ENETUNREACH: NETWORK_UNREACHABLE,
    errno.ENETDOWN: NETWORK_UNREACHABLE,
    errno.EADDRNOTAVAIL: NETWORK_UNREACHABLE,
    errno.ETIMEDOUT: GENERIC_TIMEOUT,
}

_RCODE_FAILURES: Final[dict[int, str]] = {  # RFC 1035 codes (dns.rcode's values)
    3: DNS_NXDOMAIN,
    2: DNS_SERVFAIL,
    5: DNS_REFUSED,
}

# OpenSSL X509_V_ERR codes that mean "no chain to a trusted root".
_UNKNOWN_AUTHORITY_CODES: Final = frozenset({2, 18, 19, 20, 21, 27})
_HOSTNAME_MISMATCH_CODE: Final = 62


def rcode_failure(rcode: int) -> str:
    """The failure string for a DNS response code other than NOERROR."""
    return _RCODE_FAILURES.get(int(rcode), UNKNOWN_FAILURE)


def _ssl_failure(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        if exc.verify_code == _HOSTNAME_MISMATCH_CODE:
            return SSL_INVALID_HOSTNAME
        if exc.verify_code in _UNKNOWN_AUTHORITY_CODES:
            return SSL_UNKNOWN_AUTHORITY
        return SSL_INVALID_CERTIFICATE
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return EOF_ERROR
    return SSL_FAILED_HANDSHAKE


def classify(exc: BaseException) -> str:
    """Map any exception a check may raise to one failure string of the vocabulary."""
    failure = getattr(exc, "failure", None)
    if isinstance(failure, str) and failure in FAILURES:
        return failure
    # aiohttp is imported only by rounds that make HTTP requests (http steps, DoH): an
    # exception of its kind can only exist when it was
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None:
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            return classify(exc.certificate_error)
        if isinstance(exc, aiohttp.ClientConnectorError):
            return classify(exc.os_error)
        if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
            return EOF_ERROR
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return GENERIC_TIMEOUT
    # dnspython is loaded by the DNS check only: its exceptions exist only when it was
    dns_exception, dns_resolver = sys.modules.get("dns.exception"), sys.modules.get("dns.resolver")
    if dns_exception is not None and isinstance(exc, dns_exception.Timeout):
        return GENERIC_TIMEOUT
    if isinstance(exc, asyncio.IncompleteReadError | EOFError):
        return EOF_ERROR
    if dns_resolver is not None and isinstance(exc, dns_resolver.NXDOMAIN):
        return DNS_NXDOMAIN
    if dns_resolver is not None and isinstance(exc, dns_resolver.NoAnswer):
        return DNS_NO_ANSWER
    if isinstance(exc, ssl.SSLError):
        return _ssl_failure(exc)
    if isinstance(exc, ConnectionRefusedError):
        return CONNECTION_REFUSED
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return CONNECTION_RESET
    if isinstance(exc, OSError) and exc.errno is not None:
        return _ERRNO_FAILURES.get(exc.errno, UNKNOWN_FAILURE)
    cause = exc.__cause__ or exc.__context__
    if cause is not None and cause is not exc:
        return classify(cause)
    return UNKNOWN_FAILURE

"""TLS and basic auth for `probe run`, in the Prometheus web-config file format.

The same file an operator already writes for node_exporter or Prometheus itself
(https://prometheus.io/docs/prometheus/latest/configuration/https/):

```yaml
tls_server_config:
  cert_file: probe.crt          # paths are relative to this file
  key_file: probe.key
  client_auth_type: RequireAndVerifyClientCert   # optional; needs client_ca_file
  client_ca_file: clients.pem
  min_version: TLS12            # optional: TLS10 TLS11 TLS12 TLS13
basic_auth_users:
  prometheus: $2b$12$...        # bcrypt hash (htpasswd -nbB, or python -m probe.webconfig hash)
http_server_config:
  headers: {X-Frame-Options: deny}
```

Every endpoint (/metrics, /api/status, /, /healthz, /-/reload) is behind the same TLS and
credentials. Errors name file, line and key, like the probe config's. Password checks run
bcrypt in a thread (it is slow by design); a successful check is remembered for the
process's life, keyed by a hash of the credentials, so scrapes do not pay bcrypt each
time. An unknown user still costs one bcrypt comparison, so timing does not tell which
user names exist.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import bcrypt
from aiohttp import web
from pydantic import AfterValidator, field_validator

from probe.config import ConfigError, Strict, _line_at, read_text, validate_yaml

ClientAuth = Literal[
    "NoClientCert", "RequestClientCert", "RequireAnyClientCert", "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]
TLSVersion = Literal["TLS10", "TLS11", "TLS12", "TLS13"]
_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3,
}
_BCRYPT_HASH = r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$"
# compared against when the user is unknown, so that path costs what a real check costs
_DUMMY_HASH = b"$2b$10$RoBE.ABHY15y./rbsqj2jO.qGfSkCnrplzLgL2v06V3LkJPwNFg9u"
MAX_CREDENTIALS = 1024  # Authorization headers longer than this are refused unread


class TLSServerConfig(Strict):
    cert_file: Path
    key_file: Path
    client_auth_type: ClientAuth = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: TLSVersion = "TLS12"
    max_version: TLSVersion | None = None


class HTTPServerConfig(Strict):
    headers: dict[str, str] = {}
    http2: bool = True  # accepted for compatibility; aiohttp serves HTTP/1.1


def _bcrypt_hash(value: str) -> str:
    if not re.fullmatch(_BCRYPT_HASH, value):
        raise ValueError("not a bcrypt hash ($2b$...; make one with: python -m probe.webconfig hash)")
    return value


class WebConfigFile(Strict):
    tls_server_config: TLSServerConfig | None = None
    basic_auth_users: dict[str, Annotated[str, AfterValidator(_bcrypt_hash)]] = {}
    http_server_config: HTTPServerConfig = HTTPServerConfig()

    @field_validator("basic_auth_users")
    @classmethod
    def _user_names(cls, users: dict[str, str]) -> dict[str, str]:
        for user in users:
            if ":" in user or not user:
                raise ValueError(f"user name {user!r} is empty or contains ':'")
        return users


@dataclass
class WebConfig:
    """What `probe run` needs from a web-config file."""

    path: Path
    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    _verified: set[bytes] = field(default_factory=set)

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    async def authorized(self, header: str | None) -> bool:
        """Whether an Authorization header carries valid credentials (always, without users)."""
        if not self.users:
            return True
        if header is None or len(header) > MAX_CREDENTIALS:
            return False
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user_b, sep, password = decoded.partition(b":")
        if not sep:
            return False
        user = user_b.decode("utf-8", "replace")
        key = hashlib.sha256(b"%d:" % len(user_b) + decoded).digest()
        if key in self._verified:
            return True
        hashed = self.users.get(user)
        ok = await asyncio.to_thread(bcrypt.checkpw, password, hashed or _DUMMY_HASH)
        ok = ok and hashed is not None
        if ok:
            if len(self._verified) > 4096:  # bounded: a cache, not a leak
                self._verified.clear()
            self._verified.add(key)
        return ok

    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        @web.middleware
        async def guard(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            # /healthz says only "ok" or "stale": open, so a container health check (and a
            # load balancer) needs no credentials; everything else is behind basic auth.
            if request.path != "/healthz" and not await self.authorized(
                    request.headers.get("Authorization")):
                response: web.StreamResponse = web.Response(
                    status=401, text="Unauthorized\n",
                    headers={"WWW-Authenticate": 'Basic realm="reach probe", charset="UTF-8"'})
            else:
                response = await handler(request)
            for name, value in self.headers.items():
                response.headers[name] = value
            return response

        return guard


def _server_context(tls: TLSServerConfig, base: Path, where: Callable[[str], str]) -> ssl.SSLContext:
    def fix(path: Path) -> Path:
        return path if path.is_absolute() else base / path

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[tls.min_version]
    if tls.max_version is not None:
        context.maximum_version = _VERSIONS[tls.max_version]
    try:
        context.load_cert_chain(str(fix(tls.cert_file)), str(fix(tls.key_file)))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{where('cert_file')}: cannot load certificate and key "
                          f"({fix(tls.cert_file)}, {fix(tls.key_file)}): {exc}") from None
    auth = tls.client_auth_type
    if auth in ("RequestClientCert", "RequireAnyClientCert"):
        raise ConfigError(f"{where('client_auth_type')}: {auth} (a certificate without "
                          "verification) is not supported; use VerifyClientCertIfGiven or "
                          "RequireAndVerifyClientCert with client_ca_file")
    if auth != "NoClientCert":
        if tls.client_ca_file is None:
            raise ConfigError(f"{where('client_auth_type')}: {auth} needs client_ca_file")
        try:
            context.load_verify_locations(cafile=str(fix(tls.client_ca_file)))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{where('client_ca_file')}: cannot load: {exc}") from None
        context.verify_mode = (ssl.CERT_REQUIRED if auth == "RequireAndVerifyClientCert"
                               else ssl.CERT_OPTIONAL)
    return context


def load_web_config(path: str | Path) -> WebConfig:
    """Read and validate a web-config file; every failure is a one-line ConfigError."""
    path = Path(path)
    source = str(path)
    text = read_text(path)
    model = validate_yaml(text, source, WebConfigFile)

    def where(key: str) -> str:
        return f"{source}:{_line_at(text, ('tls_server_config', key))}: tls_server_config.{key}"

    context = None
    if model.tls_server_config is not None:
        context = _server_context(model.tls_server_config, path.parent, where)
    return WebConfig(
        path, context, {u: h.encode() for u, h in model.basic_auth_users.items()},
        dict(model.http_server_config.headers),
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m probe.webconfig hash [PASSWORD]`: a bcrypt hash for basic_auth_users."""
    import getpass

    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "hash":
        print("usage: python -m probe.webconfig hash [PASSWORD]", file=sys.stderr)
        return 2
    password = args[1] if len(args) > 1 else getpass.getpass("password: ")
    print(bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())

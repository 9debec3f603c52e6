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
  prometheus: $2b$12$...        # bcrypt hash (htpasswd -nbB, or python -m probe.serve.webconfig hash)
http_server_config:
  headers: {X-Frame-Options: deny}
```

Every endpoint but /healthz is behind the same TLS and credentials; /-/reload also needs
`probe run --web-enable-lifecycle` (off by default, as Prometheus' --web.enable-lifecycle).
Errors name file, line and key, like the probe config's; a header with CR, LF or another
control character is one of them (it would break every response).

Password checks follow the exporter-toolkit's choices, tightened for a probe that shares
its cores with timing-sensitive checks:
- bcrypt runs in one worker thread (`BcryptWorker`), one check at a time, at most half a
  core (it rests as long as it worked), with a bounded queue: a wrong-password flood gets
  429 for what does not fit, never more CPU;
- the queue is fair per source address: one waiting check per source, so a flood from one
  address holds one place and a login from another address is checked at once;
- a successful check is remembered (keyed by a hash of the credentials) so scrapes do not
  pay bcrypt each time, and so is a failed (user, password) pair, so a repeated wrong
  password costs nothing;
- an unknown user is checked against a dummy hash of the highest cost configured, so the
  time of a failure does not tell which user names exist;
- a password over 72 bytes (bcrypt's limit) is a plain 401, as in Go's bcrypt.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import re
import ssl
import stat
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import bcrypt
from pydantic import AfterValidator, field_validator

from probe.inputs.config import ConfigError, Strict
from probe.inputs.yamlfile import line_at, read_text, validate_yaml

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
BCRYPT_MAX_PASSWORD = 72  # bytes: bcrypt ignores (bcrypt>=5 refuses) anything longer
CACHE_SIZE = 4096  # remembered (user, password) outcomes, each way
# RFC 9110 field names are tokens; values are visible ASCII, spaces and tabs (no CR/LF/NUL)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")
_HEADER_VALUE = re.compile(r"^[\x20-\x7e\t]{0,4096}$")


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

    @field_validator("headers")
    @classmethod
    def _valid_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"header name {name[:64]!r} is not an HTTP token")
            if not _HEADER_VALUE.fullmatch(value):
                raise ValueError(f"header {name}: the value has CR, LF or another control "
                                 "or non-ASCII character")
        return headers


def _bcrypt_hash(value: str) -> str:
    if not re.fullmatch(_BCRYPT_HASH, value):
        raise ValueError("not a bcrypt hash ($2b$...; make one with: python -m probe.serve.webconfig hash)")
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


def _cost(hashed: bytes) -> int:
    return int(hashed[4:6])


class BcryptWorker:
    """Password checks, one at a time in one thread, using at most `duty` of a core.

    A flood of wrong passwords then costs at most half a core whatever its rate (the
    rest is refused with 429 while the queue is full), instead of every core: the probe's
    checks keep their timings, and scrapes with cached credentials are not slowed.
    """

    def __init__(self, queue: int = 4, duty: float = 0.5, max_wait: float = 2.0) -> None:
        self.queue, self.duty, self.max_wait = queue, duty, max_wait
        self.cost = 0.25  # seconds per check, a running average (cost 10 is 0.05-0.3 s)
        self.pending = 0
        self._pending_from: dict[str, int] = {}
        self.checks = 0
        self.refused = 0
        self._rest_until = 0.0
        self._executor: ThreadPoolExecutor | None = None

    def _check(self, password: bytes, hashed: bytes) -> bool:
        rest = self._rest_until - time.monotonic()
        if rest > 0:
            time.sleep(rest)
        start = time.monotonic()
        try:
            return bcrypt.checkpw(password, hashed)
        except ValueError:
            return False
        finally:
            spent = time.monotonic() - start
            self.cost = max(spent, 0.8 * self.cost + 0.2 * spent)  # up at once, down slowly
            self._rest_until = time.monotonic() + spent * (1 / self.duty - 1)
            self.checks += 1

    async def check(self, password: bytes, hashed: bytes, source: str = "") -> bool | None:
        """Whether `password` matches `hashed`; None when `source` already has a check
        waiting, or too many are waiting (more than `queue`, or more than `max_wait`
        seconds of work ahead, unless it would be the second: on a loaded machine one slow
        check alone can be `max_wait` of work, and a flood from one address must still not
        lock everyone else out). The worker runs checks in arrival order, so with one place
        per source it serves the sources in turn."""
        if self._pending_from.get(source) or self.pending >= self.queue or (
                self.pending > 1 and self.pending * self.cost / self.duty > self.max_wait):
            self.refused += 1
            return None
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="bcrypt")
        self.pending += 1
        self._pending_from[source] = 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, self._check, password, hashed)
        finally:
            self.pending -= 1
            del self._pending_from[source]


class _Outcomes:
    """A bounded, least-recently-used set of credential digests."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[bytes, None] = OrderedDict()

    def __contains__(self, key: bytes) -> bool:
        if key in self._items:
            self._items.move_to_end(key)
            return True
        return False

    def add(self, key: bytes) -> None:
        self._items[key] = None
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class WebConfig:
    """What `probe run` needs from a web-config file."""

    path: Path
    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    client_auth_type: str = "NoClientCert"
    worker: BcryptWorker = field(default_factory=BcryptWorker)
    _verified: _Outcomes = field(default_factory=_Outcomes)
    _failed: _Outcomes = field(default_factory=_Outcomes)

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    @property
    def authenticates(self) -> bool:
        """Whether every client must prove who it is (a password or a verified certificate)."""
        return bool(self.users) or self.client_auth_type == "RequireAndVerifyClientCert"

    @property
    def dummy_hash(self) -> bytes:
        """Compared against for an unknown user: the highest cost configured, so an unknown
        user's failure takes as long as a known user's."""
        cost = max((_cost(h) for h in self.users.values()), default=10)
        return _DUMMY_HASH[:4] + b"%02d" % cost + _DUMMY_HASH[6:]

    async def authorized(self, header: str | None, source: str = "") -> bool | None:
        """Whether an Authorization header carries valid credentials (always, without users);
        None when the password checker has no place for `source` (answer 429)."""
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
        key = hashlib.sha256(b"%d:" % len(user_b) + decoded).digest()
        if key in self._verified:
            return True
        if key in self._failed or len(password) > BCRYPT_MAX_PASSWORD:
            return False
        hashed = self.users.get(user_b.decode("utf-8", "replace"))
        ok = await self.worker.check(password, hashed or self.dummy_hash, source)
        if ok is None:
            return None
        ok = ok and hashed is not None
        (self._verified if ok else self._failed).add(key)
        return ok


def _server_context(tls: TLSServerConfig, base: Path, where: Callable[[str], str]) -> ssl.SSLContext:
    def fix(path: Path) -> Path:
        return path if path.is_absolute() else base / path

    for key in ("cert_file", "key_file", "client_ca_file"):
        value = getattr(tls, key)
        if value is not None:  # ssl would block forever on a FIFO: regular files only
            with contextlib.suppress(OSError):
                if not stat.S_ISREG(fix(value).stat().st_mode):
                    raise ConfigError(f"{where(key)}: {fix(value)} is not a regular file")

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
        return f"{source}:{line_at(text, ('tls_server_config', key))}: tls_server_config.{key}"

    context = None
    if model.tls_server_config is not None:
        context = _server_context(model.tls_server_config, path.parent, where)
    return WebConfig(
        path, context, {u: h.encode() for u, h in model.basic_auth_users.items()},
        dict(model.http_server_config.headers),
        model.tls_server_config.client_auth_type if model.tls_server_config else "NoClientCert",
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m probe.serve.webconfig hash [PASSWORD]`: a bcrypt hash for basic_auth_users."""
    import getpass

    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "hash":
        print("usage: python -m probe.serve.webconfig hash [PASSWORD]", file=sys.stderr)
        return 2
    password = args[1] if len(args) > 1 else getpass.getpass("password: ")
    print(bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())

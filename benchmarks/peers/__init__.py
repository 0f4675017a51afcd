"""Peer serving frameworks for `python -m benchmarks compare`: the same route, answer body
and model code (benchmarks.baselines.tabular) on each framework, each in a venv of its own
(`python -m benchmarks.peers.setup`). One module per framework; `PEERS` says how compare
starts each one and when it is ready."""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.baselines.tabular import MODEL, PREDICT_PATH


@dataclass(frozen=True)
class Peer:
    name: str  # in compare's tables
    venv: str  # benchmarks.peers.setup's name for its venv
    args: tuple[str, ...]  # after the venv's python; "{port}" is filled in
    ready_path: str  # answers 200 once the peer serves
    # POST a real predict to ready_path instead of a GET: for a peer whose own health route
    # answers before its model workers are up.
    ready_post: bool = False
    env: dict[str, str] = field(default_factory=dict)

    def command(self, python: str, port: int) -> list[str]:
        return [python, *(arg.format(port=port) for arg in self.args)]


# KServe's GET /v2/health/ready is the server's readiness and true from the start; the model's
# own route asks Model.healthy() (benchmarks.peers.kserve_server: every worker loaded).
KSERVE_READY = f"/v2/models/{MODEL}/ready"

PEERS: tuple[Peer, ...] = (
    Peer(
        "litserve-2w",
        "litserve",
        ("-m", "benchmarks.peers.litserve_server", "--port", "{port}", "--workers", "2"),
        "/health",
    ),
    Peer(
        "kserve-1w",
        "kserve",
        ("-m", "benchmarks.peers.kserve_server", "--http_port", "{port}", "--workers", "1"),
        KSERVE_READY,
    ),
    Peer(
        "kserve-2w",
        "kserve",
        ("-m", "benchmarks.peers.kserve_server", "--http_port", "{port}", "--workers", "2"),
        KSERVE_READY,
    ),
    Peer(
        "bentoml-1w",
        "bentoml",
        ("-m", "bentoml", "serve", "benchmarks.peers.bentoml_service:FraudRisk")
        + ("--host", "127.0.0.1", "--port", "{port}"),
        "/readyz",
        env={"BENTOML_DO_NOT_TRACK": "True"},  # no usage reports from a benchmark
    ),
    Peer(
        "mosec",
        "mosec",
        ("-m", "benchmarks.peers.mosec_server", "--address", "127.0.0.1", "--port", "{port}")
        + ("--log-level", "warning"),
        PREDICT_PATH,
        ready_post=True,
    ),
)


def select(spec: str) -> list[Peer]:
    """`all`, `none`, or a comma list of table names (kserve-1w) or frameworks (kserve)."""
    if spec == "all":
        return list(PEERS)
    if spec == "none":
        return []
    wanted = {s.strip() for s in spec.split(",") if s.strip()}
    known = {p.name for p in PEERS} | {p.venv for p in PEERS}
    if unknown := wanted - known:
        raise ValueError(f"unknown peer(s) {sorted(unknown)}; choose from {sorted(known)}")
    return [p for p in PEERS if p.name in wanted or p.venv in wanted]

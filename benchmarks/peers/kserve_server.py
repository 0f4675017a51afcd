"""Peer: KServe 0.21 `kserve.Model` + `ModelServer`, v1 protocol, on the repository's code
(benchmarks.baselines.tabular): `preprocess` validates (`TabularModel.decode`), `predict`
runs the model and writes the v1 body. KServe serves POST /v1/models/fraud-risk:predict
itself; sync hooks run on the event loop, one request at a time. Readiness: GET
/v2/models/fraud-risk/ready, which asks `Model.healthy()` (KServe's /v2/health/ready is the
server's and answers true before any model is).

    python -m benchmarks.peers.kserve_server --http_port 8080 --workers 1|2

Flags are KServe's own (its `model_server` parses argv at import); this module adds:
- no gRPC server, and no per-request latency or access log lines, as the FastAPI baseline
  runs uvicorn without an access log;
- the listener on 127.0.0.1: RESTServer hard-codes 0.0.0.0, and a benchmark binds loopback;
- a handler that answers ServingError with its own status and body, as the service does.
`--workers 2` is KServe's RESTServerMultiProcess: spawned uvicorn processes on one socket,
each unpickling (so loading) the model. Two more changes for it:
- the parent's watchdog kills a worker that leaves a ping unanswered for 5 s, and a worker
  answers only once it has imported torch and loaded the model: on a 2-core machine two
  starting together miss that, and are killed and restarted in a loop. Allowed 60 s here;
- readiness: each worker answers ready on its own, so the first one up would let load start
  while the other is still loading. Ready here means every worker has loaded (a shared
  counter), as LitServe's /health.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import sys
import tempfile
from pathlib import Path
from typing import Any

from fastapi.responses import JSONResponse
from kserve import Model, ModelServer, model_server
from kserve.logging import KSERVE_LOG_CONFIG
from kserve.protocol.rest import server as rest_server
from kserve.protocol.rest.multiprocess import server as multiprocess_server

from benchmarks.baselines.tabular import MODEL, TabularModel
from deployments.errors import ServingError

HOST = "127.0.0.1"


async def _serving_error(_: Any, exc: ServingError) -> JSONResponse:
    return JSONResponse(exc.to_body(), status_code=exc.status_code)


# At import: spawned workers import this module too, and build their app from the same
# module-level `kserve.model_server.app`.
model_server.app.add_exception_handler(ServingError, _serving_error)
_rest_init = rest_server.RESTServer.__init__


def _loopback_init(self: Any, *args: Any, **kwargs: Any) -> None:
    _rest_init(self, *args, **kwargs)
    self.config.host = HOST


rest_server.RESTServer.__init__ = _loopback_init
_is_alive = multiprocess_server.RESTServerProcess.is_alive


def _patient_is_alive(self: Any, timeout: float = 60) -> bool:
    return _is_alive(self, timeout)


multiprocess_server.RESTServerProcess.is_alive = _patient_is_alive


class FraudRisk(Model):
    def __init__(self, workers: int = 1) -> None:
        super().__init__(MODEL)
        self.model: TabularModel | None = None
        self.workers = workers
        # Spawned workers inherit it with the pickled model: each counts its own load.
        self.loaded = multiprocessing.get_context("spawn").Value("i", 0)
        self.all_loaded = workers == 1
        self.load()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)  # `model` is already loaded here (TabularModel.__reduce__)
        with self.loaded.get_lock():
            self.loaded.value += 1

    async def healthy(self) -> bool:
        # Also asked before every predict: the shared counter only until it is complete.
        self.all_loaded = self.all_loaded or self.loaded.value >= self.workers
        return self.ready and self.all_loaded

    def load(self) -> bool:
        self.model = TabularModel()
        self.ready = True
        return self.ready

    def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        return self.model.decode(payload)

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        return self.model.answer(self.model.forward(payload))


def quiet_log_config() -> str:
    """KServe's log config with per-request lines (uvicorn access, kserve.trace) off; a file,
    because each spawned worker configures logging again from `--log_config_file`."""
    config = copy.deepcopy(KSERVE_LOG_CONFIG)
    for name in ("uvicorn.access", "kserve.trace"):
        config["loggers"][name]["level"] = "WARNING"
    path = Path(tempfile.gettempdir()) / "kserve_peer_logging.json"
    path.write_text(json.dumps(config))
    return str(path)


def main() -> None:
    args = model_server.args
    if "--log_config_file" not in sys.argv:
        args.log_config_file = quiet_log_config()
    server = ModelServer(enable_grpc=False, enable_latency_logging=False)
    server.start([FraudRisk(server.workers)])


if __name__ == "__main__":
    main()

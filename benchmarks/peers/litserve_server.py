"""Peer: LitServe 0.2.19 on the repository's code (benchmarks.baselines.tabular), batched.

LitAPI hooks, all in LitServe's inference worker processes:
  decode_request   `TabularModel.decode` per request (a refused one travels as its error,
                   so it does not fail the batch it lands in)
  batch / predict  one forward pass over the valid requests' rows (max_batch_size 64,
                   batch_timeout 3 ms), split back per request
  unbatch          the per-request list as it is
  encode_response  the v1 body, or the error's own status and body
In 0.2.19 the route is the LitAPI's `api_path` (LitServer's is deprecated); readiness is
LitServe's GET /health (200 once every inference worker has run `setup`). `--workers` is
`workers_per_device` on the CPU; LitServe starts as many API server (uvicorn) processes.

    python -m benchmarks.peers.litserve_server --port 8000 --workers 2
"""

import argparse

import litserve as ls
from fastapi.responses import JSONResponse

from benchmarks.baselines.tabular import PREDICT_PATH, TabularModel
from deployments.errors import ServingError

HOST = "127.0.0.1"


class FraudRisk(ls.LitAPI):
    # `request` and the return of encode_response stay unannotated: LitServe reads those
    # annotations as the endpoint's body and response types (none: the parsed JSON body).
    def setup(self, device):
        self.model = TabularModel()

    def decode_request(self, request):
        try:
            return self.model.decode(request)
        except ServingError as exc:
            return exc

    def batch(self, inputs):
        return list(inputs)

    def predict(self, x):
        valid = [item for item in x if not isinstance(item, ServingError)]
        outputs = iter(self.model.forward_many(valid) if valid else [])
        return [item if isinstance(item, ServingError) else next(outputs) for item in x]

    def unbatch(self, output):
        return output

    def encode_response(self, output):
        if isinstance(output, ServingError):
            return JSONResponse(output.to_body(), status_code=output.status_code)
        return self.model.answer(output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    api = FraudRisk(max_batch_size=64, batch_timeout=0.003, api_path=PREDICT_PATH)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=args.workers)
    # No client.py written into the checkout, no access log (as the FastAPI baseline).
    server.run(
        host=HOST,
        port=args.port,
        generate_client_file=False,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()

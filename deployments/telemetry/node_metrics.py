"""The ingress's `/metrics`: this node's Ray metrics agent, relayed at a fixed address.

Ray exports every process's metrics (ours through `ray.serve.metrics`, Serve's and Ray's own)
from one metrics agent per node, on the node's `--metrics-export-port`. `serve run` starts
Ray embedded with that port chosen at random, so a laptop would have no fixed address to
scrape; the ingress knows its node and relays the agent's text at
`http://127.0.0.1:8000/metrics`. On a cluster, Prometheus scrapes each node's agent directly
(cluster/prometheus/prometheus.yml); this endpoint then shows the ingress's node only.
"""

from __future__ import annotations

import asyncio
import urllib.request

from deployments.errors import NotReady

SCRAPE_TIMEOUT_S = 5.0


class NodeMetrics:
    def __init__(self) -> None:
        self._url: str | None = None

    async def scrape(self) -> str:
        try:
            if self._url is None:
                self._url = await asyncio.to_thread(_agent_url)
            return await asyncio.to_thread(_fetch, self._url)
        except OSError as exc:
            self._url = None  # the agent may have restarted on another port: look again
            raise NotReady(f"this node's Ray metrics agent did not answer: {exc}") from None


def _agent_url() -> str:
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node.get("NodeID") == node_id and node.get("Alive"):
            return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    raise OSError(f"node {node_id} is not in the cluster's node table")


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:  # noqa: S310 - our agent
        return response.read().decode("utf-8")

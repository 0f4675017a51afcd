"""Ray's cluster key-value store (GCS), one namespace per use: what replicas share through it
(the drift window's slots, the shadow's counts, Triton's statistics) goes through here.

Outside a Ray worker (offline use, unit tests) nothing is stored and nothing is found.
"""

from __future__ import annotations

from typing import Protocol


class KeyValueStore(Protocol):
    def put(self, key: str, value: bytes) -> None: ...
    def get_many(self, keys: list[str]) -> dict[str, bytes]: ...
    def keys(self, prefix: str) -> list[str]: ...
    def delete(self, key: str) -> None: ...


class RayKeyValueStore:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def put(self, key: str, value: bytes) -> None:
        kv = _kv()
        if kv is not None:
            kv._internal_kv_put(key, value, overwrite=True, namespace=self.namespace)

    def get_many(self, keys: list[str]) -> dict[str, bytes]:
        """One round trip to the GCS for every key, however many there are."""
        kv = _kv()
        if kv is None or not keys:
            return {}
        client = kv.internal_kv_get_gcs_client()
        found = client.internal_kv_multi_get([k.encode() for k in keys], self.namespace.encode())
        return {k.decode(): v for k, v in found.items()}

    def keys(self, prefix: str) -> list[str]:
        kv = _kv()
        if kv is None:
            return []
        found = kv._internal_kv_list(prefix, namespace=self.namespace) or []
        return [k.decode() if isinstance(k, bytes) else k for k in found]

    def delete(self, key: str) -> None:
        kv = _kv()
        if kv is not None:
            kv._internal_kv_del(key, namespace=self.namespace)


def _kv():  # type: ignore[no-untyped-def]
    from ray.experimental import internal_kv

    return internal_kv if internal_kv._internal_kv_initialized() else None

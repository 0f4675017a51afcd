"""Resilience decorators on well-kept libraries: retry (tenacity) and a TTL result cache
(cachetools). Leaves: they know nothing of HTTP or models.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from itertools import islice
from operator import itemgetter
from typing import Any, Literal, TypeVar

import numpy as np
from cachetools import TTLCache
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """A replica died or is briefly unavailable: another try may land on a healthy one.

    Overload (BackPressureError) is deliberately not transient here: the answer to a full
    queue is a fast 503, not more load.
    """
    from ray import exceptions as ray_exc
    from ray.serve import exceptions as serve_exc

    return isinstance(
        exc,
        (
            ray_exc.ActorDiedError,
            ray_exc.ActorUnavailableError,
            ray_exc.RayActorError,
            serve_exc.DeploymentUnavailableError,
        ),
    )


async def retry_transient(
    call: Callable[[], Awaitable[T]],
    attempts: int,
    max_wait_s: float,
    retryable: Callable[[BaseException], bool] = is_transient,
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """Run `call()` (which must issue a fresh request each time) with exponential backoff
    and full jitter between attempts; non-retryable errors surface at once."""
    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_random_exponential(multiplier=0.05, max=max_wait_s),
        retry=retry_if_exception(retryable),
        before_sleep=(lambda state: on_retry(state.outcome.exception())) if on_retry else None,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity reraises the last error")


CacheMode = Literal["auto", "on", "off"]
CACHE_MODES: tuple[CacheMode, ...] = ("auto", "on", "off")

# Per cached entry beyond its value: TTLCache's data and size dict slots, its LRU/TTL link,
# and the (value, size) tuple it holds. Rough, but a per-entry cost the value alone misses.
_ENTRY_OVERHEAD = 256
# sys.getsizeof of an empty ndarray: the object header that nbytes leaves out.
_ARRAY_OVERHEAD = 112
# Items looked at in a long list, dict or object array; the rest are assumed alike, so an
# estimate costs the same for ten rows and for a million.
_SAMPLE = 32
# Nested containers past this depth are counted shallowly: bounded work on deep or cyclic
# values.
_MAX_DEPTH = 4
# Last resort when even sys.getsizeof fails (a __sizeof__ that raises).
_UNKNOWN_BYTES = 64

_SCALARS = (str, bytes, bytearray, int, float, complex, bool, type(None), np.generic)


def estimate_bytes(value: Any) -> int:
    """Roughly how many bytes `value` keeps alive: what a byte-bounded cache charges for it.

    Numpy arrays count their `nbytes` (the data; exact and free to read) plus a header;
    dataclasses such as `Prediction` count their fields (outputs, model_version, ...);
    lists, tuples, dicts and object arrays count every item when short and an evenly spaced
    sample scaled to their length when long, so the cost stays small and O(1) in rows.
    Shared objects are counted once per reference: an over-estimate, the safe side for a
    memory bound. Never raises: for a value it cannot walk it falls back on sys.getsizeof.
    """
    try:
        return _bytes_of(value, 0)
    except Exception:  # noqa: BLE001 - an odd value must not fail a request
        try:
            return sys.getsizeof(value)
        except Exception:  # noqa: BLE001
            return _UNKNOWN_BYTES


def _bytes_of(obj: Any, depth: int) -> int:
    if isinstance(obj, np.ndarray):
        size = _ARRAY_OVERHEAD + obj.nbytes
        if obj.dtype.hasobject and obj.size:
            # nbytes counts only the pointers of an object array (e.g. of str).
            size += _sampled(obj.size, lambda i: obj.flat[i], depth)
        return size
    if isinstance(obj, _SCALARS) or depth >= _MAX_DEPTH:
        return sys.getsizeof(obj)
    if isinstance(obj, Mapping):
        items = obj.items() if len(obj) <= _SAMPLE else list(islice(obj.items(), _SAMPLE))
        # A long mapping's first items stand for the rest: it cannot be indexed evenly.
        part = sum(_bytes_of(k, depth + 1) + _bytes_of(v, depth + 1) for k, v in items)
        return sys.getsizeof(obj) + part * len(obj) // max(len(items), 1)
    if isinstance(obj, (list, tuple)):
        return sys.getsizeof(obj) + _sampled(len(obj), obj.__getitem__, depth)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = dataclasses.fields(obj)
        return sys.getsizeof(obj) + sum(_bytes_of(getattr(obj, f.name), depth + 1) for f in fields)
    return sys.getsizeof(obj)


def _sampled(n: int, item: Callable[[int], Any], depth: int) -> int:
    """Bytes of n items: all of them when few, else an evenly spaced sample scaled up."""
    if n <= _SAMPLE:
        return sum(_bytes_of(item(i), depth + 1) for i in range(n))
    sample = sum(_bytes_of(item(i * n // _SAMPLE), depth + 1) for i in range(_SAMPLE))
    return sample * n // _SAMPLE


def _root_nbytes(array: np.ndarray) -> int | None:
    """Bytes of the buffer an array's view keeps alive, or None when it cannot be told."""
    base: Any = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    nbytes = getattr(base, "nbytes", None)
    return nbytes if isinstance(nbytes, int) else None


def _detached(value: Any) -> Any:
    """`value` with its output arrays owning their data, when they are views of more.

    A request's outputs are slices of its whole batch's arrays (`Batch.part`), often
    zero-copy over the buffer Ray deserialized. Cached as they are, one small entry would
    pin the whole batch while being charged only its own nbytes, and the byte bound would
    be a fiction. The copy is of the entry's own bytes, once per store.
    """
    outputs = getattr(value, "outputs", None)
    if not isinstance(outputs, dict) or not dataclasses.is_dataclass(value):
        return value

    def pins_more(column: Any) -> bool:
        if not isinstance(column, np.ndarray) or column.base is None:
            return False
        root = _root_nbytes(column)
        return root is None or root > column.nbytes

    if not any(pins_more(column) for column in outputs.values()):
        return value
    owned = {name: c.copy() if pins_more(c) else c for name, c in outputs.items()}
    try:
        return dataclasses.replace(value, outputs=owned)  # type: ignore[type-var]
    except Exception:  # noqa: BLE001 - a dataclass replace() cannot rebuild: keep it as is
        return value


class ResultCache:
    """A TTL cache of results keyed by model, version and canonical input, bounded in bytes.

    Bytes, not entries: a count says nothing of memory when one answer is a few floats and
    another is an (n, 384) float32 embedding; 10,000 of the latter are gigabytes in an
    ingress of 512 MiB. Each entry is charged `estimate_bytes` of its value plus its key and
    a fixed overhead, and cachetools' TTLCache evicts least recently used entries to stay
    under `max_bytes`. A value bigger than the whole cache is not stored.

    Modes: "on" always caches; "off" never does (get and put do nothing); "auto", the one
    to ship, starts on and watches itself. A cache of unique requests (transactions, say)
    is all misses: pure cost, a canonical JSON dump and a sha256 per request plus the memory
    of entries no one asks for again. So after every run of `probe_lookups` lookups whose
    hit ratio is under `min_hit_ratio`, it drops its entries and stays off for `pause_s`
    seconds, then probes again. Unique traffic pays for at most `probe_lookups` keys per
    pause; repetitive traffic keeps its cache.

    Callers check `enabled` before computing a key. Not thread-safe: meant for one asyncio
    loop. A change of `ttl_s` or `max_bytes` is a new cache; `mode` can be set in place.
    """

    def __init__(
        self,
        mode: CacheMode,
        ttl_s: float,
        max_bytes: int,
        *,
        min_hit_ratio: float = 0.05,
        probe_lookups: int = 1000,
        pause_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        if not 0 <= min_hit_ratio <= 1:
            raise ValueError(f"min_hit_ratio must be in [0, 1], got {min_hit_ratio}")
        if probe_lookups < 1:
            raise ValueError(f"probe_lookups must be >= 1, got {probe_lookups}")
        if pause_s < 0:
            raise ValueError(f"pause_s must be >= 0, got {pause_s}")
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.min_hit_ratio = min_hit_ratio
        self.probe_lookups = probe_lookups
        self.pause_s = pause_s
        self._clock = clock
        self._cache = self._empty()
        self.hits = 0
        self.misses = 0
        self._mode: CacheMode = "off"
        # Set only while an auto cache is paused; None keeps `enabled` free of clock reads.
        self._paused_until: float | None = None
        self._run_lookups = 0
        self._run_hits = 0
        self.mode = mode

    def _empty(self) -> TTLCache[str, tuple[Any, int]]:
        # Entries are (value, bytes): the size is computed once, with the key, in put().
        return TTLCache(
            maxsize=self.max_bytes, ttl=self.ttl_s, timer=self._clock, getsizeof=itemgetter(1)
        )

    @property
    def mode(self) -> CacheMode:
        return self._mode

    @mode.setter
    def mode(self, mode: CacheMode) -> None:
        if mode not in CACHE_MODES:
            raise ValueError(f"cache mode must be one of {CACHE_MODES}, got {mode!r}")
        # Config pushes set the mode each time: the same mode must not end a pause.
        if mode == self._mode:
            return
        self._mode = mode
        self._paused_until = None
        self._run_lookups = self._run_hits = 0
        if mode == "off":
            self._cache = self._empty()

    @property
    def enabled(self) -> bool:
        until = self._paused_until
        if until is None:
            return self._mode != "off"
        if self._clock() < until:
            return False
        self._paused_until = None
        return True

    @property
    def state(self) -> Literal["on", "off", "paused"]:
        if self._mode == "off":
            return "off"
        return "on" if self.enabled else "paused"

    @property
    def bytes_used(self) -> int:
        return self._cache.currsize

    @staticmethod
    def key(model: str, version: str, payload: Any) -> str:
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(f"{model}\0{version}\0{canonical}".encode()).hexdigest()

    def get(self, key: str) -> Any | None:
        if not self.enabled:
            return None
        entry = self._cache.get(key)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        if self._mode == "auto":
            self._probe(entry is not None)
        return None if entry is None else entry[0]

    def _probe(self, hit: bool) -> None:
        self._run_lookups += 1
        self._run_hits += hit
        if self._run_lookups < self.probe_lookups:
            return
        if self._run_hits < self.min_hit_ratio * self._run_lookups:
            # Entries no one asks for again are memory for nothing: free them now.
            self._paused_until = self._clock() + self.pause_s
            self._cache = self._empty()
        self._run_lookups = self._run_hits = 0

    def put(self, key: str, value: Any) -> None:
        if not self.enabled:
            return
        size = estimate_bytes(value) + sys.getsizeof(key) + _ENTRY_OVERHEAD
        if size > self.max_bytes:
            return
        # cachetools' "value too large" (should the estimate ever disagree): not an error.
        with contextlib.suppress(ValueError):
            self._cache[key] = (_detached(value), size)

    def __len__(self) -> int:
        return len(self._cache)

"""A bounded LRU cache of per-message scores, keyed by a hash: no text is stored."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from threading import Lock
from typing import Generic, TypeVar

V = TypeVar("V")


def cache_key(model_version: str, tenant: str, context: str, text: str) -> bytes:
    """A digest of what decides a message's scores (model, the turns before it, the message)
    and of who may see them (`tenant`: a digest of the caller's API key, so that one key
    holder cannot learn from timing what another has sent)."""
    h = hashlib.blake2b(digest_size=16)
    for part in (model_version, tenant, context, text):
        data = part.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.digest()


class ScoreCache(Generic[V]):
    """Least-recently-used mapping from digest to value, at most `capacity` entries."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[bytes, V] = OrderedDict()
        self._lock = Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: bytes) -> V | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: bytes, value: V) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

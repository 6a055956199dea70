"""Rows an API process found recently (learners, conversations), so the
check every utterance makes does not read them each time.

Bounded (least recently used out first) and short-lived: a learner can be
erased, with its conversations, by any API process (DELETE /v1/users/{id}),
so a row found here is trusted for `ttl_s` at most; after that every process
has stopped accepting utterances for an erased learner.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Recent(Generic[K, V]):
    def __init__(self, capacity: int, ttl_s: float) -> None:
        self._rows: OrderedDict[K, tuple[V, float]] = OrderedDict()
        self._capacity = capacity
        self._ttl_s = ttl_s

    def get(self, key: K) -> V | None:
        found = self._rows.get(key)
        if found is None:
            return None
        if found[1] < time.monotonic():
            del self._rows[key]
            return None
        self._rows.move_to_end(key)
        return found[0]

    def put(self, key: K, row: V) -> V:
        self._rows[key] = (row, time.monotonic() + self._ttl_s)
        self._rows.move_to_end(key)
        if len(self._rows) > self._capacity:
            self._rows.popitem(last=False)
        return row

    def forget(self, key: K) -> None:
        self._rows.pop(key, None)

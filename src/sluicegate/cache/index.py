"""The nearest-neighbour search of the semantic cache: an in-process matrix of unit vectors.

Rows are ``(vector, context, entry key, expiry)``. ``search`` scores every row against the query
(one matrix-vector product: about 0.3 ms at 10,000 rows of 384 floats on an idle core) and keeps
the best row of the same context that has not expired. The cache runs it in a worker thread.
Memory is bounded: at most ``max_rows`` rows (1.5 KiB of vector each), the oldest overwritten
first (a ring).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from .embed import DIMENSION

if TYPE_CHECKING:
    from .embed import Vector

__all__ = ["VectorIndex"]


class VectorIndex:
    def __init__(self, max_rows: int, dimension: int = DIMENSION) -> None:
        self.max_rows = max(1, max_rows)
        self._capacity = min(self.max_rows, 1024)
        self._vectors = np.zeros((self._capacity, dimension), dtype=np.float32)
        self._contexts = np.full(self._capacity, -1, dtype=np.int64)
        self._expires = np.zeros(self._capacity, dtype=np.float64)
        self._keys: list[str] = [""] * self._capacity
        self._context_ids: dict[str, int] = {}
        self._rows = 0  # rows in use (≤ capacity)
        self._next = 0  # the row written next (a ring once full)

    def __len__(self) -> int:
        return self._rows

    @property
    def nbytes(self) -> int:
        return int(self._vectors.nbytes + self._contexts.nbytes + self._expires.nbytes)

    def _grow(self) -> None:
        capacity = min(self.max_rows, self._capacity * 2)
        pad = capacity - self._capacity
        self._vectors = np.concatenate(
            [self._vectors, np.zeros((pad, self._vectors.shape[1]), dtype=np.float32)])
        self._contexts = np.concatenate([self._contexts, np.full(pad, -1, dtype=np.int64)])
        self._expires = np.concatenate([self._expires, np.zeros(pad, dtype=np.float64)])
        self._keys.extend([""] * pad)
        self._capacity = capacity

    def add(self, vector: Vector, context: str, key: str, expires_at: float) -> None:
        """Add a row (``expires_at``: ``time.time()`` s)."""
        if self._next >= self._capacity and self._capacity < self.max_rows:
            self._grow()
        row = self._next % self._capacity
        context_id = self._context_ids.setdefault(context, len(self._context_ids))
        self._vectors[row] = vector
        self._contexts[row] = context_id
        self._expires[row] = expires_at
        self._keys[row] = key
        self._rows = min(self._rows + 1, self._capacity)
        self._next = row + 1 if row + 1 < self.max_rows else 0
        if len(self._context_ids) > 4 * self.max_rows:  # forget contexts no row uses
            self._compact_contexts()

    def _compact_contexts(self) -> None:
        used = set(self._contexts[:self._rows].tolist())
        names = {v: k for k, v in self._context_ids.items() if v in used}
        remap = {old: new for new, old in enumerate(sorted(names))}
        self._context_ids = {names[old]: new for old, new in remap.items()}
        self._contexts[:self._rows] = [remap.get(int(c), -1) for c in self._contexts[:self._rows]]

    def search(self, vector: Vector, context: str, now: float | None = None
               ) -> tuple[str, float] | None:
        """The best unexpired row of ``context``: (entry key, cosine similarity), or None."""
        context_id = self._context_ids.get(context)
        if context_id is None or not self._rows:
            return None
        n = self._rows
        scores = self._vectors[:n] @ vector
        now = time.time() if now is None else now
        valid = (self._contexts[:n] == context_id) & (self._expires[:n] > now)
        if not valid.any():
            return None
        scores[~valid] = -2.0
        best = int(np.argmax(scores))
        return self._keys[best], float(scores[best])

    def discard(self, key: str) -> None:
        """Forget the rows of an entry that is gone."""
        for row in range(self._rows):
            if self._keys[row] == key:
                self._expires[row] = 0.0

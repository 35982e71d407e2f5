"""Per-client sliding-window rate limit (docs/DESIGN.md, "Rate limit": 5 questions per minute by default).

Memory is bounded: clients idle for a whole window are dropped, and past `max_clients` the least
recently seen client is evicted, so a flood of new client ids cannot grow the limiter forever.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque


class RateLimiter:
    def __init__(self, per_minute: int, window_s: float = 60.0, clock=time.monotonic, max_clients: int = 10_000):
        self.per_minute, self.window_s, self.clock, self.max_clients = per_minute, window_s, clock, max_clients
        self._hits: OrderedDict[str, deque] = OrderedDict()
        self._lock = threading.Lock()
        self._last_sweep = clock()

    def check(self, client: str) -> float:
        """0 if the client may ask now (and the question is counted), else seconds to wait."""
        return self._check(client, record=True)

    def wait(self, client: str) -> float:
        """Seconds the client must wait, without counting anything (0: it may go on)."""
        return self._check(client, record=False)

    def forget(self, client: str) -> None:
        """Take back the client's newest count: its question was refused after all (too long for
        the model with its sources), and only questions asked are counted."""
        with self._lock:
            if hits := self._hits.get(client):
                hits.pop()

    def record(self, client: str) -> None:
        """Count one event for the client (a failed login), whether or not it is over the limit."""
        with self._lock:
            self._hits.setdefault(client, deque()).append(self.clock())
            self._hits.move_to_end(client)
            while len(self._hits) > self.max_clients:
                self._hits.popitem(last=False)

    def _check(self, client: str, record: bool) -> float:
        if self.per_minute <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            if now - self._last_sweep >= self.window_s:
                self._sweep(now)
            hits = self._hits.get(client)
            if hits is None:
                if not record:  # a look adds no client: `wait` for a flood of new ids must not grow it
                    return 0.0
                hits = self._hits[client] = deque()
            self._hits.move_to_end(client)
            while hits and now - hits[0] >= self.window_s:
                hits.popleft()
            if len(hits) >= self.per_minute:
                return self.window_s - (now - hits[-self.per_minute])
            if not record:
                return 0.0
            hits.append(now)
            while len(self._hits) > self.max_clients:
                self._hits.popitem(last=False)
            return 0.0

    def _sweep(self, now: float) -> None:
        for client in [c for c, hits in self._hits.items() if not hits or now - hits[-1] >= self.window_s]:
            del self._hits[client]
        self._last_sweep = now

    def __len__(self) -> int:
        return len(self._hits)

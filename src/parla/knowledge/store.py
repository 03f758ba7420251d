"""A knowledge base per character: passages embedded with MiniLM, kept and searched in Chroma.

Chroma runs embedded, persisted under ``<data_dir>/chroma`` (the Titans character API's ``CHROMA_DB_PATH``), or as
a server by URL at scale (``PARLA_CHROMA_URL``). Parla computes the embeddings itself and hands
Chroma the vectors: Chroma's own default embedding function would download a model.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from parla.knowledge.documents import passages
from parla.knowledge.embedder import Embedder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Passage:
    text: str
    source: str
    score: float
    """Cosine similarity to the query (1 is identical)."""


def collection_name(owner: str) -> str:
    """Chroma's rules: 3-512 characters of [a-zA-Z0-9._-], starting and ending alphanumeric."""
    safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in owner).strip("._-")
    return f"kb-{safe or 'default'}"[:512]


class KnowledgeBase:
    def __init__(self, *, path: Path, url: str | None = None, embedder: Embedder | None = None) -> None:
        self.path = path
        self.url = url
        self.embedder = embedder or Embedder()
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                # Chroma is imported here, at the first knowledge operation: a server that only
                # speaks never pays for it.
                log.info("opening the knowledge store (Chroma %s) (first use)", self.url or self.path)
                import chromadb
                from chromadb.config import Settings as ChromaSettings

                settings = ChromaSettings(anonymized_telemetry=False)
                if self.url:
                    parts = urlsplit(self.url)
                    self._client = chromadb.HttpClient(
                        host=parts.hostname or "127.0.0.1",
                        port=parts.port or 8000,
                        ssl=parts.scheme == "https",
                        settings=settings,
                    )
                else:
                    self.path.mkdir(parents=True, exist_ok=True)
                    self._client = chromadb.PersistentClient(path=str(self.path), settings=settings)
            return self._client

    @property
    def loaded(self) -> bool:
        """Whether Chroma is open (its client made)."""
        return self._client is not None

    def _collection(self, owner: str) -> Any:
        return self.client.get_or_create_collection(
            collection_name(owner), embedding_function=None, metadata={"hnsw:space": "cosine"}
        )

    def add(self, owner: str, data: bytes, filename: str) -> int:
        """Split, embed and store a document; returns how many passages it gave."""
        return self.add_passages(owner, passages(data, filename), filename)

    def add_passages(self, owner: str, texts: list[str], source: str) -> int:
        """Embed and store passages already split from ``source`` (a file name)."""
        vectors = self.embedder.embed(texts)
        collection = self._collection(owner)
        start = collection.count()
        collection.add(
            ids=[f"{source}:{start + i}" for i in range(len(texts))],
            embeddings=vectors.tolist(),
            documents=texts,
            metadatas=[{"source": source, "index": i} for i in range(len(texts))],
        )
        return len(texts)

    def search(self, owner: str, query: str, k: int = 3) -> list[Passage]:
        """The ``k`` passages closest in meaning to ``query``, best first."""
        collection = self._collection(owner)
        if not query.strip() or collection.count() == 0:
            return []
        found = collection.query(
            query_embeddings=self.embedder.embed([query]).tolist(),
            n_results=min(k, collection.count()),
            include=["documents", "metadatas", "distances"],
        )
        return [
            Passage(text=doc, source=str(meta.get("source", "")), score=round(1.0 - float(dist), 4))
            for doc, meta, dist in zip(found["documents"][0], found["metadatas"][0], found["distances"][0], strict=True)
        ]

    def count(self, owner: str) -> int:
        return int(self._collection(owner).count())

    def drop(self, owner: str) -> None:
        name = collection_name(owner)
        if name in [c.name for c in self.client.list_collections()]:
            self.client.delete_collection(name)

"""Audio blobs. A local directory by default; keys are relative paths like ``generations/<id>.mp3``.

Writes go to a temporary file beside the target and are renamed into place on commit, so a
failure halfway leaves nothing behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path, PurePosixPath


class BlobWriter:
    def __init__(self, target: Path) -> None:
        self.target = target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
        self._tmp = Path(tmp)
        self._file = os.fdopen(fd, "wb")
        self.size = 0

    @property
    def temp_path(self) -> Path:
        return self._tmp

    def write(self, data: bytes) -> None:
        if data:
            self._file.write(data)
            self.size += len(data)

    def commit(self) -> Path:
        self._file.close()
        self._tmp.chmod(0o644)  # mkstemp makes it private; the audio is served like any file
        os.replace(self._tmp, self.target)
        return self.target

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._tmp.unlink(missing_ok=True)


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """The file for ``key``; refuses keys that would leave the store."""
        rel = PurePosixPath(key)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise ValueError(f"invalid blob key {key!r}")
        return self.root.joinpath(*rel.parts)

    def writer(self, key: str) -> BlobWriter:
        return BlobWriter(self.path(key))

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

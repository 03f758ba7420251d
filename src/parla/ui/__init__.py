"""The web studio: one static page (HTML, CSS, plain ES modules) that drives Parla's public API.

No build step and nothing fetched from elsewhere: the files under ``static/`` are served as they
are by ``parla.api.ui`` at ``/ui/``.
"""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
"""Where the page's files live (shipped inside the package)."""

__all__ = ["STATIC_DIR"]

"""The repository stands on its own: no file of the product points outside it, to the team's
notes beside the checkout or to the reference documents by their file numbers."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).parents[1]

OUTSIDE_REFERENCES = {
    "the team's folder beside the checkout": re.compile(r"\.\./shared\b|\bshared/(?:DESIGN|NOTES|STYLE|seeds|eval)\b"),
    "the team's notes": re.compile(r"\bDESIG[N](?:\.md)?\b|\b(?:NOTE[S]|STYL[E])\.md\b"),
    "a reference document by its file number": re.compile(r"\bseeds?[ -]?0[0-9]{2}\b|\b0[0-9]{2}_[0-9a-f]{16}\b", re.I),
}


def tracked_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in listed.decode().split("\0") if name]


def test_no_tracked_file_refers_outside_the_repository() -> None:
    files = tracked_files()
    assert len(files) > 50, "git ls-files listed too little to be this repository"
    found = []
    for path in files:
        if path == Path(__file__):
            continue  # it spells out what it looks for
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):
            continue  # binary files, or a file deleted in the work tree
        for number, line in enumerate(text.splitlines(), 1):
            for what, pattern in OUTSIDE_REFERENCES.items():
                if pattern.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {what}: {line.strip()[:100]}")
    assert not found, "\n".join(found)


def test_the_patterns_catch_what_they_are_for() -> None:
    # The check above is only as good as its patterns; each must still see what it looks for.
    samples = {
        "the team's folder beside the checkout": "bash ../" + "shared/eval/dev-voices.sh",
        "the team's notes": "(see " + "DESIGN, 'Clashes'; NOTES" + ".md)",
        "a reference document by its file number": "the " + "seed 003 server",
    }
    for what, sample in samples.items():
        assert OUTSIDE_REFERENCES[what].search(sample), what
    assert not any(p.search("random seed 42; the seed 1234") for p in OUTSIDE_REFERENCES.values())

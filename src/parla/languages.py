"""Language codes as requests name them: ISO 639-1 (``fr``), with the regional and script forms the
reference APIs use (``en-US``, ``pt_BR``, ``zh-cn``, ``zh-Hant``), and the few three-letter codes
Whisper knows (``haw``, ``yue``).

``language_code`` reads a request's code or refuses it: a code that names no language is a 422,
whatever the engine (a language that exists but that nothing here speaks is another matter: a 400
that says which engines would, decided where the engines are).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from parla.errors import ParlaError

ISO_639_1 = frozenset(
    """
    aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy da
    de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz
    ia id ie ig ii ik io is it iu ja jv jw ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li
    ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om or os pa
    pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv sw ta te tg th
    ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu
    """.split()  # noqa: SIM905 - a table to read, not a list to scroll
)
"""Every ISO 639-1 code (and ``jw``, Whisper's older code for Javanese)."""
OTHER_CODES = frozenset({"haw", "yue", "cmn"})
"""Three-letter codes engines here use: Hawaiian and Cantonese (Whisper), Mandarin (espeak-ng)."""

_FORM = re.compile(r"^([a-z]{2,3})(?:-[a-z0-9]{2,8})*$")


class UnknownLanguageError(ParlaError):
    """A language code that names no language (``xx``, ``english``): a 422."""

    status_code = 422


def language_code(raw: str, *, param: str = "language") -> str:
    """``raw`` as Parla writes a language: lowercase, ``-`` between its parts (``pt_BR`` -> ``pt-br``).
    Raises ``UnknownLanguageError`` when it names no language."""
    code = raw.strip().lower().replace("_", "-")
    match = _FORM.match(code)
    if match is None or (match.group(1) not in ISO_639_1 and match.group(1) not in OTHER_CODES):
        raise UnknownLanguageError(
            f"{raw!r} is not a language code: use ISO 639-1 (en, fr, zh), optionally with a region (en-us, pt-br)",
            param=param,
        )
    return code


def base_language(code: str) -> str:
    """The language of a code without its region or script (``zh-cn`` -> ``zh``, ``cmn`` -> ``zh``)."""
    base = code.split("-")[0]
    return "zh" if base == "cmn" else base


def speaks(declared: Iterable[str], code: str) -> bool:
    """Whether an engine that declares ``declared`` (``*``: any) speaks ``code``: the same language,
    whatever the region (``en-us`` is spoken by an engine that declares ``en``, and the reverse)."""
    wanted = base_language(code)
    return any(d == "*" or base_language(d.lower()) == wanted for d in declared)

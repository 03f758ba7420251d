"""Text normalisation for speech: write out what a reader would say for numbers, money, dates,
times, ordinals, abbreviations, URLs and e-mail addresses.

Rules run in a fixed order, most specific first (a URL before the numbers inside it, money
before plain numbers), so every rule sees text the earlier ones have already spelled out.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from num2words import num2words

MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_MONTH_ABBREV = {m[:3].lower(): m for m in MONTHS}

_CURRENCIES = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "€": ("euro", "euros", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "¥": ("yen", "yen", "sen", "sen"),
}
_CODES = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}

# Abbreviations that end with a period and are read as a word. Titles come before names.
_ABBREVIATIONS = {
    "mr": "Mister",
    "mrs": "Missus",
    "ms": "Miz",
    "dr": "Doctor",
    "prof": "Professor",
    "jr": "Junior",
    "sr": "Senior",
    "st": "Saint",
    "mt": "Mount",
    "ave": "Avenue",
    "blvd": "Boulevard",
    "rd": "Road",
    "inc": "Incorporated",
    "ltd": "Limited",
    "co": "Company",
    "corp": "Corporation",
    "dept": "Department",
    "approx": "approximately",
    "vs": "versus",
    "etc": "et cetera",
    "est": "established",
    "fig": "figure",
    "vol": "volume",
    "gen": "General",
    "gov": "Governor",
    "sgt": "Sergeant",
    "capt": "Captain",
    "lt": "Lieutenant",
}
_UNITS = {
    "km": ("kilometer", "kilometers"),
    "cm": ("centimeter", "centimeters"),
    "mm": ("millimeter", "millimeters"),
    "kg": ("kilogram", "kilograms"),
    "mg": ("milligram", "milligrams"),
    "lb": ("pound", "pounds"),
    "lbs": ("pound", "pounds"),
    "mph": ("mile per hour", "miles per hour"),
    "km/h": ("kilometer per hour", "kilometers per hour"),
    "kb": ("kilobyte", "kilobytes"),
    "mb": ("megabyte", "megabytes"),
    "gb": ("gigabyte", "gigabytes"),
    "tb": ("terabyte", "terabytes"),
    "ms": ("millisecond", "milliseconds"),
    "hz": ("hertz", "hertz"),
    "khz": ("kilohertz", "kilohertz"),
    "°c": ("degree Celsius", "degrees Celsius"),
    "°f": ("degree Fahrenheit", "degrees Fahrenheit"),
}
_SYMBOLS = {"&": " and ", "+": " plus ", "=": " equals ", "%": " percent", "°": " degrees"}


def _words(number: float | int, **kwargs: str) -> str:
    # num2words writes British-style commas ("one million, two hundred"); a comma would make
    # the synthesiser pause in the middle of a number.
    return str(num2words(number, **kwargs)).replace(",", "")


def _cardinal(digits: str) -> str:
    digits = digits.replace(",", "")
    if digits.startswith("-"):
        return "minus " + _cardinal(digits[1:])
    if "." in digits:
        whole, frac = digits.split(".", 1)
        head = _words(int(whole or "0"))
        return head + " point " + " ".join(_words(int(d)) for d in frac)
    return _words(int(digits))


def _spell_address(text: str) -> str:
    """Read out a host, path or e-mail address: dots, slashes and symbols as words."""
    spoken = {
        ".": " dot ",
        "/": " slash ",
        "@": " at ",
        "-": " dash ",
        "_": " underscore ",
        ":": " colon ",
        "?": " question mark ",
        "=": " equals ",
        "&": " and ",
        "#": " hash ",
        "~": " tilde ",
        "+": " plus ",
    }
    out = "".join(spoken.get(ch, ch) for ch in text)
    out = re.sub(r"\d+", lambda m: " ".join(_words(int(d)) for d in m.group()), out)
    return re.sub(r"\s+", " ", out).strip()


def _url(match: re.Match[str]) -> str:
    url = match.group(0)
    trailing = ""
    while url and url[-1] in ".,;:!?)":
        trailing = url[-1] + trailing
        url = url[:-1]
    url = re.sub(r"^https?://", "", url, flags=re.I)
    url = re.sub(r"^www\.", "w w w dot ", url, flags=re.I).rstrip("/")
    return _spell_address(url) + trailing


def _email(match: re.Match[str]) -> str:
    return _spell_address(match.group(0))


def _money(match: re.Match[str]) -> str:
    symbol = match.group("sym") or _CODES[match.group("code").upper()]
    one, many, sub_one, sub_many = _CURRENCIES[symbol]
    amount, scale = match.group("amount").replace(",", ""), match.group("scale")
    if scale:
        return f"{_cardinal(amount)} {scale.lower()} {many}"
    whole, _, frac = amount.partition(".")
    units = int(whole or "0")
    cents = int((frac + "00")[:2]) if frac else 0
    parts = []
    if units or not cents:
        parts.append(f"{_words(units)} {one if units == 1 else many}")
    if cents:
        parts.append(f"{_words(cents)} {sub_one if cents == 1 else sub_many}")
    return " and ".join(parts)


def _day(day: int) -> str:
    return _words(day, to="ordinal")


def _year(year: int) -> str:
    return _words(year, to="year")


def _iso_date(match: re.Match[str]) -> str:
    year, month, day = int(match.group(1)), int(match.group(2)), int(match.group(3))
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return match.group(0)
    return f"{MONTHS[month - 1]} {_day(day)}, {_year(year)}"


def _us_date(match: re.Match[str]) -> str:
    month, day, year = int(match.group(1)), int(match.group(2)), int(match.group(3))
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return match.group(0)
    return f"{MONTHS[month - 1]} {_day(day)}, {_year(year)}"


def _month_day(match: re.Match[str]) -> str:
    month = _MONTH_ABBREV[match.group("month")[:3].lower()]
    day = int(match.group("day"))
    if not 1 <= day <= 31:
        return match.group(0)
    out = f"{month} {_day(day)}"
    if match.group("year"):
        out += f", {_year(int(match.group('year')))}"
    return out


def _decade(match: re.Match[str]) -> str:
    said = _year(int(match.group(1)))
    return said[:-1] + "ies" if said.endswith("y") else said + "s"


def _time(match: re.Match[str]) -> str:
    hour, minute = int(match.group("h")), int(match.group("m") or 0)
    if hour > 24 or minute > 59:
        return match.group(0)
    suffix = (match.groupdict().get("ampm") or "").lower().replace(".", "").replace(" ", "")
    said = _words(hour)
    if minute == 0:
        said += "" if suffix else " o'clock"
    elif minute < 10:
        said += f" oh {_words(minute)}"
    else:
        said += f" {_words(minute)}"
    if suffix:
        said += " " + " ".join(suffix.upper())
        # "at 3 p.m. Then" and "at 3 pm." end a sentence: keep the full stop the suffix swallowed.
        rest = match.string[match.end() :]
        if match.group("ampm").endswith(".") and (not rest.strip() or re.match(r"\s+[A-Z]", rest)):
            said += "."
    return said


def _ordinal(match: re.Match[str]) -> str:
    return _words(int(match.group(1).replace(",", "")), to="ordinal")


def _percent(match: re.Match[str]) -> str:
    return f"{_cardinal(match.group(1))} percent"


def _unit(match: re.Match[str]) -> str:
    number, unit = match.group(1), match.group(2)
    one, many = _UNITS[unit.lower()]
    return f"{_cardinal(number)} {one if number in ('1', '1.0') else many}"


def _abbreviation(match: re.Match[str]) -> str:
    word = match.group(1)
    expansion = _ABBREVIATIONS[word.lower()]
    if word.lower() == "st" and match.group(2) == "":
        # "Main St." (after a name, end of phrase) is a street; "St. John" is a saint.
        return "Street"
    return expansion


def _number(match: re.Match[str]) -> str:
    text = match.group(0)
    sign = "minus " if text.startswith("-") else ""
    digits = text.lstrip("-")
    plain = digits.replace(",", "")
    if "." not in plain and len(plain) == 4 and 1100 <= int(plain) <= 2099 and "," not in digits:
        return sign + _year(int(plain))
    return sign + _cardinal(digits)


_Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], str] | str]

_RULES: list[_Rule] = [
    (re.compile(r"\b(?:https?://|www\.)[^\s<>\"]+", re.I), _url),
    (re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"), _email),
    (
        re.compile(
            r"(?:(?P<sym>[$€£¥])\s?|\b(?P<code>USD|EUR|GBP|JPY)\s?)"
            r"(?P<amount>\d[\d,]*(?:\.\d+)?)(?:\s?(?P<scale>thousand|million|billion|trillion)\b)?",
            re.I,
        ),
        _money,
    ),
    (re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b"), _iso_date),
    (re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b"), _us_date),
    (
        re.compile(
            r"\b(?P<month>Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|"
            r"Aug(?:ust)?|Sept?(?:ember)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?\s+"
            r"(?P<day>\d{1,2})(?:st|nd|rd|th)?\b(?:,?\s+(?P<year>\d{4})\b)?"
        ),
        _month_day,
    ),
    (
        re.compile(r"\b(?P<h>\d{1,2})(?::(?P<m>\d{2}))?\s*(?P<ampm>[ap]\.?\s?m\.?)(?=\W|$)", re.I),
        _time,
    ),
    (re.compile(r"\b(?P<h>\d{1,2}):(?P<m>\d{2})\b(?!:)"), _time),
    (re.compile(r"\b(\d[\d,]*)(?:st|nd|rd|th)\b", re.I), _ordinal),
    (re.compile(r"\b(1[1-9]\d0|20\d0)s\b"), _decade),
    (re.compile(r"(\d[\d,]*(?:\.\d+)?)\s?%"), _percent),
    (
        re.compile(
            r"(?<![\w.])(-?\d+(?:\.\d+)?)\s?(km/h|km|cm|mm|kg|mg|lbs|lb|mph|kb|mb|gb|tb|ms|khz|hz|°c|°f)(?!\w)",
            re.I,
        ),
        _unit,
    ),
    (re.compile(r"\b(e\.g\.)", re.I), "for example"),
    (re.compile(r"\b(i\.e\.)", re.I), "that is"),
    (
        re.compile(r"\b((?i:" + "|".join(_ABBREVIATIONS) + r"))\.(\s+(?=[A-Z0-9])|)"),
        lambda m: _abbreviation(m) + (m.group(2) or ""),
    ),
    (re.compile(r"#(?=\d)|\bNo\.\s*(?=\d)", re.I), "number "),
    (re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?(?![\w])"), _number),
]


_UNSPEAKABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
"""Control characters and lone surrogates: nothing a reader says, and NUL crashes phonemisers."""


# -- other languages: numbers, money and percentages in the language's own words --------------------

_LOCAL_WORDS: dict[str, dict[str, str]] = {
    "fr": {"%": "pour cent", "€": "euros", "&": "et", "-": "moins"},
    "de": {"%": "Prozent", "€": "Euro", "&": "und", "-": "minus"},
    "es": {"%": "por ciento", "€": "euros", "&": "y", "-": "menos"},
    "it": {"%": "per cento", "€": "euro", "&": "e", "-": "meno"},
    "pt": {"%": "por cento", "€": "euros", "&": "e", "-": "menos"},
    "nl": {"%": "procent", "€": "euro", "&": "en", "-": "min"},
    "pl": {"%": "procent", "€": "euro", "&": "i", "-": "minus"},
    "ru": {"%": "процентов", "€": "евро", "&": "и", "-": "минус"},
    "cs": {"%": "procent", "€": "eur", "&": "a", "-": "minus"},
    "fi": {"%": "prosenttia", "€": "euroa", "&": "ja", "-": "miinus"},
    "tr": {"%": "yüzde", "€": "avro", "&": "ve", "-": "eksi"},
}
"""The languages whose numbers num2words spells (and that write a decimal comma), with the words for
what the English rules would say in English. Other languages keep their digits: the engines that
speak them read digits in the language themselves (espeak-ng's rules, XTTS's own normaliser)."""

_LOCAL_NUMBER = re.compile(r"(?<![\w.,])(-?)(\d+(?:[.\u00a0\u202f ]\d{3}(?!\d))*(?:[.,]\d+)?)(?![\w])")
"""A number as these languages write it: ``1.000`` or ``1 000`` (thousands), ``3,5`` (decimal comma)."""


def _local_value(written: str) -> int | float:
    """``1.000,5`` -> 1000.5, ``3,5`` -> 3.5, ``1.5`` -> 1.5 (not three digits after the point: a
    decimal point), ``1 000`` -> 1000."""
    digits = re.sub(r"[\u00a0\u202f ]", "", written)
    if "," in digits:
        whole, fraction = digits.rsplit(",", 1)
        return float(f"{whole.replace('.', '')}.{fraction}")
    groups = digits.split(".")
    if len(groups) > 1 and all(len(g) == 3 for g in groups[1:]):
        return int("".join(groups))
    return float(digits) if "." in digits else int(digits)


def _localize(text: str, language: str) -> str:
    words = _LOCAL_WORDS[language]

    def number(match: re.Match[str]) -> str:
        value = _local_value(match.group(2))
        sign = words["-"] + " " if match.group(1) else ""
        if isinstance(value, int) and 1100 <= value <= 2099 and not sign and len(match.group(2)) == 4:
            return str(num2words(value, lang=language, to="year"))
        return sign + str(num2words(value, lang=language))

    def euros(match: re.Match[str]) -> str:
        # "3,50 €": three euros fifty, as a price is said (not "three point five euros").
        whole, cents = _local_value(match.group(1)), int(match.group(2) or 0)
        said = f"{num2words(int(whole), lang=language)} {words['€']}"
        return f"{said} {num2words(cents, lang=language)}" if cents else said

    text = re.sub(r"€\s?(\d(?:[\d.\u00a0\u202f ]*\d)?(?:,\d{2})?)(?!\d)", r"\1 €", text)  # "€5" is read "5 €"
    text = re.sub(r"(?<![\d.,])(\d+(?:[.\u00a0\u202f ]\d{3}(?!\d))*)(?:,(\d{2}))?\s?€", euros, text)
    text = re.sub(r"(\d)\s?%", r"\1 " + words["%"], text)
    text = text.replace("&", f" {words['&']} ")
    return _LOCAL_NUMBER.sub(number, text)


def normalize_text(text: str, language: str = "en") -> str:
    """Spell out what a speech engine would otherwise misread, in ``language`` (a code Parla has read):
    English by its full rules; the languages of ``_LOCAL_WORDS`` their numbers, money and percentages;
    any other only cleaned (the engine reads it as written). Idempotent on plain prose."""
    text = _UNSPEAKABLE.sub(" ", text)
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    base = language.lower().replace("_", "-").split("-")[0]
    if base == "en":
        for pattern, replacement in _RULES:
            text = pattern.sub(replacement, text)
        for symbol, spoken in _SYMBOLS.items():
            text = text.replace(symbol, spoken)
    elif base in _LOCAL_WORDS:
        text = _localize(text, base)
    return re.sub(r"[ \t]+", " ", text).strip()

"""Hooks for the schemathesis run of ``tests/test_api_fuzz.py`` (loaded through SCHEMATHESIS_HOOKS).

Generated requests must never make the server reach beyond this machine: a generated sample URL or
a character's language model ``base_url`` could name any public address. Every string that looks
like a URL is defanged before the call, whatever the test phase that made it."""

from __future__ import annotations

from typing import Any

import schemathesis


def _defang(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("://", ":__")
    if isinstance(value, dict):
        return {_defang(k): _defang(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_defang(v) for v in value)
    return value


@schemathesis.hook
def before_call(context: Any, case: Any, **kwargs: Any) -> None:
    for part in ("body", "query", "path_parameters", "headers"):
        value = getattr(case, part, None)
        if value is not None:
            setattr(case, part, _defang(value))

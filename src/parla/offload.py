"""The one concurrency rule: blocking work never runs on the event loop.

Database reads and writes, file reads and hashing, audio decoding and encoding (PyAV), model
calls and HTTP probes of remote engines all block. An ``async`` route or service hands each such
call to ``offload``, which runs it on a worker thread; an engine's synthesis runs on that engine's
own runner thread instead (``engines/runner.py``), one request at a time. Plain ``def`` routes are
run on a thread by FastAPI and may block.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


async def offload(function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``function(*args, **kwargs)`` on a worker thread, awaited."""
    return await asyncio.to_thread(function, *args, **kwargs)

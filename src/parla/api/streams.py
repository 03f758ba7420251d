"""Audio responses that start only once their audio has: ``started`` awaits a stream's first bytes
before the response is committed to 200.

Everything a request can get wrong is refused by ``SpeechService.prepare``, but some failures only
show when synthesis starts: a model that cannot load, a worker or service that refuses the voice.
Sent before that, the 200 and its headers are gone, and the client gets a stream that breaks off;
awaited first, the failure is an error status with a JSON ``detail`` like any other. The wait costs
nothing a client would notice: no byte could have been sent before the first audio anyway.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing


async def started(stream: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    """``stream`` with its first item already made (raising here what making it raised). Closing
    the result closes ``stream``, which stops the synthesis."""
    try:
        first = await anext(stream)
    except StopAsyncIteration:
        first = None
    except BaseException:
        await stream.aclose()
        raise
    return _rest(first, stream)


async def _rest(first: bytes | None, stream: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    async with aclosing(stream):
        if first is not None:
            yield first
        async for item in stream:
            yield item

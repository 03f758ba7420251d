"""The thread-to-async bridge that engines' audio and characters' tokens both cross: items arrive in
order as they are made, errors arrive as errors, and a consumer that leaves stops the producer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from parla.offload import iterate_in_thread


async def test_items_arrive_in_order_from_the_given_thread() -> None:
    threads: set[str] = set()

    def count() -> Iterator[int]:
        for i in range(5):
            threads.add(threading.current_thread().name)
            yield i

    with ThreadPoolExecutor(1, thread_name_prefix="producer") as executor:
        assert [i async for i in iterate_in_thread(count, executor)] == [0, 1, 2, 3, 4]
    assert len(threads) == 1 and next(iter(threads)).startswith("producer")


async def test_what_the_producer_raises_is_raised_after_its_items() -> None:
    def failing() -> Iterator[str]:
        yield "first"
        raise ValueError("the model fell over")

    received: list[str] = []
    with pytest.raises(ValueError, match="fell over"):
        async for item in iterate_in_thread(failing):
            received.append(item)
    assert received == ["first"]


async def test_leaving_early_stops_the_producer_and_closes_its_iterator() -> None:
    made: list[int] = []
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            for i in range(100_000):
                made.append(i)
                yield i
        finally:
            closed.set()

    stream = iterate_in_thread(endless)
    async for _ in stream:
        break
    await stream.aclose()
    assert await asyncio.to_thread(closed.wait, 5)
    assert len(made) < 100_000


async def test_nothing_starts_before_the_first_item_is_asked_for() -> None:
    started = threading.Event()

    def noting() -> Iterator[int]:
        started.set()
        yield 1

    stream = iterate_in_thread(noting)
    await asyncio.sleep(0.05)
    assert not started.is_set()
    assert [i async for i in stream] == [1]

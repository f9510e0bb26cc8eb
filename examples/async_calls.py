"""Async: an `async def` function, driven from an async local entrypoint.

    apothic run examples/async_calls.py

Every call has an async form, spelled `fn.remote.aio(...)` or `fn.aio.remote(...)`; maps and
generators become async iterators (`async for`), in input order.

Expected output:
    remote: 42
    gathered: [1, 4, 9]
    mapped: [0, 2, 4, 6]
    streamed: ['a', 'b']
"""

import asyncio

import apothic

app = apothic.App("example-async")


@app.function()
async def double(x: int) -> int:
    await asyncio.sleep(0.01)
    return 2 * x


@app.function()
def square(x: int) -> int:
    return x * x


@app.function()
async def letters(n: int):
    for i in range(n):
        yield "abcdefgh"[i]


@app.local_entrypoint()
async def main() -> None:
    print("remote:", await double.remote.aio(21))
    jobs = [await square.spawn.aio(x) for x in (1, 2, 3)]
    print("gathered:", await apothic.Job.gather.aio(*jobs))
    print("mapped:", [r async for r in double.map.aio(range(4))])
    print("streamed:", [x async for x in letters.aio.remote_gen(2)])

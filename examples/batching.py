"""Batching: single calls gathered into one call of a function that takes lists.

    apothic run examples/batching.py --n 12

`@apothic.batched(max_batch_size=..., wait_ms=...)` calls the function with up to that many
inputs at once (one list per parameter); callers still pass one value and get one result.

Expected output:
    lengths: [5, 6, 6]
    12 inputs in batches of at most 8
"""

import apothic

app = apothic.App("example-batching")


@app.function()
@apothic.batched(max_batch_size=8, wait_ms=200)
def lengths(words: list[str]) -> list[int]:
    print(f"a batch of {len(words)}")
    return [len(w) for w in words]


@app.function()
@apothic.batched(max_batch_size=8, wait_ms=200)
def batch_size(xs: list[int]) -> list[int]:
    return [len(xs)] * len(xs)


@app.local_entrypoint()
def main(n: int = 12) -> None:
    print("lengths:", lengths.map(["apple", "banana", "cherry"]))
    sizes = batch_size.map(range(n))
    print(f"{len(sizes)} inputs in batches of at most {max(sizes)}")

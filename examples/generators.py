"""Generators: a function that yields, iterated here while it still runs.

    apothic run examples/generators.py --count 4

Each item arrives as soon as the remote generator yields it; what it prints between items
shows in order with them.

Expected output:
    counting down from 4
    got 4
    got 1
    liftoff after 4 items
"""

import time

import apothic

app = apothic.App("example-generators")


@app.function(timeout_s=60)
def countdown(start: int):
    print(f"counting down from {start}")
    for i in range(start, 0, -1):
        time.sleep(0.1)
        yield i


@app.local_entrypoint()
def main(count: int = 3) -> None:
    items = 0
    for item in countdown.remote_gen(count):
        print(f"got {item}")
        items += 1
    print(f"liftoff after {items} items")

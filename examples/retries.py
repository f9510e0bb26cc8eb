"""Retries: a flaky function succeeds on its third attempt.

    apothic run examples/retries.py

`retries=apothic.Retries(...)` retries a failing attempt after a growing delay; each retry
shows as a line while the call waits.

Expected output:
    attempt 1 for 'orders'
    attempt 3 for 'orders'
    fetched 'orders' after 3 attempts
"""

import collections

import apothic

app = apothic.App("example-retries")

# The container keeps its module state between inputs, so a warm container counts attempts.
ATTEMPTS: collections.Counter[str] = collections.Counter()


@app.function(retries=apothic.Retries(max_retries=3, initial_delay=0.2, backoff_coefficient=2.0))
def fetch(key: str) -> str:
    ATTEMPTS[key] += 1
    print(f"attempt {ATTEMPTS[key]} for {key!r}")
    if ATTEMPTS[key] < 3:
        raise ConnectionError(f"upstream busy (attempt {ATTEMPTS[key]})")
    return f"fetched {key!r} after {ATTEMPTS[key]} attempts"


@app.local_entrypoint()
def main(key: str = "orders") -> None:
    print(fetch.remote(key))

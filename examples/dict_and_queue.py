"""Dict and Queue: this machine fills a work queue, functions drain it into a shared Dict.

    apothic run examples/dict_and_queue.py --n 6 --workers 2

`main` makes an ephemeral Queue (gone when its `with` block ends) and passes it to two
function calls running at once; each takes numbers from it until it gets the stop marker
(None) and writes the squares into the named Dict "example-squares", which both it and this
machine reach by name. Every call has an `.aio` twin (`await tasks.aio.get()`).

Expected output:
    queued 6 numbers for 2 workers
    squares: {0: 0, 1: 1, 2: 4, 3: 9, 4: 16, 5: 25}
    numbers squared: 6
"""

import apothic

app = apothic.App("example-dict-and-queue")
RESULTS = "example-squares"


@app.function(max_containers=2)
def worker(tasks: apothic.Queue) -> int:
    results = apothic.Dict.from_name(RESULTS)
    done = 0
    while (n := tasks.get(timeout=60)) is not None:  # blocks until a number (or the marker) arrives
        results[n] = n * n
        done += 1
    return done


@app.local_entrypoint()
def main(n: int = 6, workers: int = 2) -> None:
    results = apothic.Dict.from_name(RESULTS, create_if_missing=True)
    results.clear()
    with apothic.Queue.ephemeral() as tasks:
        tasks.put_many([*range(n), *[None] * workers])  # one stop marker per worker
        print(f"queued {n} numbers for {workers} workers")
        jobs = [worker.spawn(tasks) for _ in range(workers)]
        done = sum(job.wait() for job in jobs)
    print(f"squares: {dict(sorted(results.items()))}")
    print(f"numbers squared: {done}")
    apothic.Dict.delete(RESULTS)

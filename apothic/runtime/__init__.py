"""The function container: ``python -m apothic.runtime``.

A Temporal worker on one deployment's task queue that executes inputs as the activity
``apothic.execute``. It only dials out to the Temporal server. User code runs in the main
thread, so a cancel or a timeout can interrupt even a blocking ``time.sleep``; a function that
ignores the interruption gets its container replaced. A function that takes several inputs at
once runs them on threads or as asyncio tasks (``_concurrent``); a batched function's inputs
are gathered into lists (``_batcher``).
"""

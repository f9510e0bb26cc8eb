"""``python -m apothic.vastsim``: serve a simulated Vast.ai API until interrupted."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from ._server import Simulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apothic.vastsim", description=__doc__)
    parser.add_argument("--port", type=int, default=8765, help="TCP port (0: a free one); default 8765")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind; default 127.0.0.1")
    parser.add_argument("--catalogue-seed", type=int, default=0, help="seed of the offer catalogue")
    parser.add_argument("--machines", type=int, default=130, help="machines in the catalogue (~1.2 offers each)")
    parser.add_argument("--instance-mode", choices=("process", "docker"), default="process")
    parser.add_argument("--api-key", action="append", help="accepted API key (repeatable); default vastsim-key")
    parser.add_argument("--loading-s", type=float, default=2.0, help="seconds an instance stays 'loading'")
    parser.add_argument("--search-limit", type=int, default=64, help="most offers one search returns")
    parser.add_argument("--data-dir", help="logs, workdirs and volumes (default: a temporary directory)")
    parser.add_argument("--inherit-env", action="store_true", help="instances inherit this environment")
    args = parser.parse_args(argv)
    sim = Simulator(host=args.host, port=args.port, api_key=args.api_key or "vastsim-key",
                    catalogue_seed=args.catalogue_seed, machines=args.machines,
                    instance_mode=args.instance_mode, loading_s=args.loading_s,
                    search_limit=args.search_limit, data_dir=args.data_dir, inherit_env=args.inherit_env)
    try:
        url = sim.start()
    except (RuntimeError, OSError) as e:
        print(f"vastsim: {e}", file=sys.stderr)
        return 1
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    print(f"vastsim serving {url} (VAST_URL={url} VAST_API_KEY={sim.api_key}); "
          f"{len(sim.asks)} offers, instance mode {sim.instance_mode}", flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Classes: load a model once per container, then serve many calls from it.

    apothic run examples/classes.py
    apothic run examples/classes.py --text "a fine day" --style shouting

`@app.cls()` deploys the class; `@apothic.enter()` runs once as each container starts (here:
"loading" a small sentiment lexicon, which takes a second), `@apothic.method()` methods are
called with `.remote`, `.map`, `.spawn`, ... and `@apothic.exit()` runs when the container
drains. Each set of `apothic.parameter()` values is an instance with containers of its own.

Expected output:
    first call (container start and @enter included): {'label': 'positive', 'score': 4,
    four more through map
    'label': 'negative', 'score': -3
    served by 1 container(s); the lexicon was loaded once in each
    another parameter set, its own container: {'label': 'POSITIVE', 'score': 4,
"""

import os
import time

import apothic

app = apothic.App("classes-example")

LEXICON = {"good": 1, "great": 2, "fine": 1, "happy": 2, "bad": -1, "awful": -2, "sad": -2, "slow": -1}


@app.cls(timeout_s=60)
class Sentiment:
    style: str = apothic.parameter(default="plain")

    @apothic.enter()
    def load(self) -> None:
        print(f"loading the lexicon in process {os.getpid()} (once per container)")
        time.sleep(1)  # stands for reading model weights
        self.lexicon = dict(LEXICON)
        self.loaded_at = time.time()
        self.calls = 0

    @apothic.method()
    def score(self, text: str) -> dict:
        self.calls += 1
        total = sum(self.lexicon.get(word.strip(".,!?").lower(), 0) for word in text.split())
        label = "positive" if total > 0 else "negative" if total < 0 else "neutral"
        return {
            "label": label.upper() if self.style == "shouting" else label,
            "score": total,
            "container": os.getpid(),
            "calls_so_far": self.calls,
        }

    @apothic.exit()
    def unload(self) -> None:
        print(f"container {os.getpid()} drains after {self.calls} calls")


@app.local_entrypoint()
def main(text: str = "a great and happy day", style: str = "plain") -> None:
    model = Sentiment(style=style)
    started = time.perf_counter()
    print("first call (container start and @enter included):", model.score.remote(text))
    print(f"  took {time.perf_counter() - started:.2f} s")
    started = time.perf_counter()
    results = model.score.map(["good", "awful and slow", "fine", "nothing here"])
    print(f"four more through map in {time.perf_counter() - started:.2f} s:")
    for result in results:
        print("  ", result)
    containers = {r["container"] for r in results}
    print(f"served by {len(containers)} container(s); the lexicon was loaded once in each")
    other = Sentiment(style="shouting" if style != "shouting" else "plain")
    print("another parameter set, its own container:", other.score.remote(text))

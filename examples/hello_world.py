"""Hello world: a function called once with remote(), then over a range with map().

    apothic run examples/hello_world.py --n 3 --name Ada

`apothic run` deploys the app for the run, calls the local entrypoint `main` here (its flags
come from its signature: `--n 3 --name Ada`), shows what the function prints as it prints it
(each map input's lines marked `[square #i]`), and removes the app when `main` returns.

Expected output:
    greeting Ada from a function container
    Hello, Ada!
    [square #2] squaring 2
    squares of 0..2: [0, 1, 4]
"""

import apothic

app = apothic.App("example-hello-world")


@app.function()
def greet(name: str) -> str:
    where = "this machine" if apothic.is_local() else "a function container"
    print(f"greeting {name} from {where}")
    return f"Hello, {name}!"


@app.function()
def square(x: int) -> int:
    print(f"squaring {x}")
    return x * x


@app.local_entrypoint()
def main(n: int = 3, name: str = "world") -> None:
    print(greet.remote(name))
    print(f"squares of 0..{n - 1}: {square.map(range(n))}")

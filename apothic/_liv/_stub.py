"""A stub as the model sees it: its ``def`` (decorators left out), docstring and examples.

Also the stub's checks (it has a docstring and no body of its own), its signature as the answer
must keep it, and the client's part of the cache key.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import textwrap
from collections.abc import Callable
from typing import Any

from .._options._problems import show

# The instructions every generation starts from (the system message).
SYSTEM = """\
You write the implementation of one Python function from its stub. Answer with one ```python
code block holding the complete function definition, plus the imports and helpers it needs at
module level. Keep the function's name, parameters, defaults and annotations exactly as in the
stub, and keep its docstring. The code must run as it is on Python 3: do not call the function,
read input, print, or leave placeholders. Nothing outside the code block is used."""


class StubError(Exception):
    """A stub that cannot be generated from (the message says why and how to fix it)."""


def function_node(source: str, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The first ``def name`` of ``source`` (at any level), or None."""
    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return node
    return None


def signature_of(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """``[async ]def name(params) -> ret`` as ``ast.unparse`` writes it (one normal form)."""
    ret = f" -> {ast.unparse(node.returns)}" if node.returns is not None else ""
    head = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
    return f"{head} {node.name}({ast.unparse(node.args)}){ret}"


def stub_source(fn: Callable[..., Any]) -> tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    """The stub's ``def`` and body (its decorators left out), dedented, and its parsed node."""
    name = getattr(fn, "__name__", "?")
    try:
        lines, _ = inspect.getsourcelines(fn)
    except (OSError, TypeError):
        raise StubError(
            f"the source of {name} cannot be read (a function typed into an interactive session has none). "
            "Fix: define the stub in a file"
        ) from None
    text = textwrap.dedent("".join(lines))
    node = function_node(text, name)
    if node is None:
        raise StubError(f"the source of {name} does not parse as a function. Fix: define the stub as a plain `def`")
    body = text.splitlines(keepends=True)[node.lineno - 1: node.end_lineno]
    text = textwrap.dedent("".join(body))
    node = function_node(text, name)
    assert node is not None
    return text, node


def stub_body_problem(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """Why the function is not a stub (its body does something), or ""."""
    body = list(node.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    if not body:
        return ""
    if len(body) == 1:
        stmt = body[0]
        if isinstance(stmt, ast.Pass) or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
                                          and stmt.value.value is Ellipsis):
            return ""
        if isinstance(stmt, ast.Raise) and stmt.exc is not None:
            exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
            if isinstance(exc, ast.Name) and exc.id == "NotImplementedError":
                return ""
    return (f"its body has code of its own (line {body[0].lineno} of the def); a generated function's body is "
            f"written by the model")


def example_call(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """``name(arg, key=value)`` with each value's repr (shortened)."""
    parts = [show(a) for a in args] + [f"{k}={show(v)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


def prompt(source: str, name: str, examples: list[tuple[str, str]], return_hint: str) -> str:
    """The user message: the stub, then each example's call and expected result."""
    text = f"Implement this Python function. Keep its signature and docstring exactly:\n\n```python\n{source.rstrip()}\n```\n"
    if examples:
        text += "\nExamples (each must hold for your implementation):\n"
        for call, expected in examples:
            if expected:
                text += f"- {call} returns {expected}\n"
            else:
                returns = f" (the result must be {return_hint})" if return_hint else ""
                text += f"- {call} must run without error{returns}\n"
    text += f"\nAnswer with the complete definition of {name} in one ```python code block."
    return text


def cache_key(source: str, doc: str, examples_digest: str, self_debug: bool, model: str | None) -> str:
    """The client's part of the cache key (the control worker adds the model it uses)."""
    blob = json.dumps({"v": 1, "source": source, "doc": doc, "examples": examples_digest,
                       "self_debug": self_debug, "model": model or ""}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()

"""The code in a model's answer, checked without running it.

The answer's first ```python block that defines the function (or its whole text when it has no
block) must parse and define, at its top level, the function with the stub's signature: the same
``def``/``async def``, parameters, defaults and annotations (compared as ``ast.unparse`` writes
them). Nothing is executed here: the control worker only reads the text.
"""

from __future__ import annotations

import ast
import re

from ._stub import signature_of

MAX_SOURCE_CHARS = 64 * 1024
_BLOCK = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)


def code_blocks(content: str) -> list[str]:
    """The fenced code blocks of ``content`` that may be Python, in order."""
    return [body for lang, body in _BLOCK.findall(content)
            if lang.lower() in ("", "python", "py", "python3") and body.strip()]


def check_answer(content: str, function: str, signature: str) -> tuple[str, str]:
    """``(source, problem)``: the code found in ``content`` and why it cannot be used ("" if it can)."""
    blocks = code_blocks(content)
    if not blocks and "```" in content:
        return "", "the answer has a code block, but not one of Python"
    candidates = blocks or [content]
    source = next((b for b in candidates if re.search(rf"\bdef\s+{re.escape(function)}\s*\(", b)), candidates[0])
    source = source.strip("\n") + "\n"
    if not source.strip():
        return "", "the answer holds no code"
    if len(source) > MAX_SOURCE_CHARS:
        return source[:MAX_SOURCE_CHARS], f"the code is {len(source)} characters long; at most {MAX_SOURCE_CHARS}"
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        where = f"line {e.lineno}" + (f", column {e.offset}" if e.offset else "")
        return source, f"the code does not parse: {where}: {e.msg}"
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    mine = [n for n in defs if n.name == function]
    if not mine:
        others = ", ".join(n.name for n in defs) or "no function"
        return source, f"the code defines no top-level function named {function} (it defines {others})"
    got = signature_of(mine[-1])
    if got != signature:
        return source, f"the signature differs from the stub's: expected `{signature}`, got `{got}`"
    return source, ""

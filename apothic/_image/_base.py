"""What an image starts from: :class:`ImageBase`, the registry reference grammar, and
whether a Dockerfile reads its build context."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ._canonical import LOCAL_ONLY
from ._checks import Problems, check_hash, check_python_version, check_str

__all__ = ["ImageBase", "dockerfile_uses_context"]


@dataclass(frozen=True)
class ImageBase:
    """What an image starts from.

    Attributes:
        kind: ``"debian_slim"``, ``"registry"`` or ``"dockerfile"``.
        python_version: the Python of a ``debian_slim`` base, as ``"3.X"``.
        ref: the registry reference of a ``registry`` base, exactly as given.
        add_python: for ``registry``/``dockerfile`` bases, a Python to install on top
            (``None``: use the image's own Python).
        dockerfile: the Dockerfile text of a ``dockerfile`` base (hashed).
        dockerfile_path: where that Dockerfile was read from (not hashed).
        context_dir: the local build context directory (not hashed).
        context_hash: content hash of ``context_dir``, or ``None`` when the Dockerfile has
            no ``ADD``/``COPY`` from the context and so needs none.
    """

    kind: str
    python_version: str | None = None
    ref: str | None = None
    add_python: str | None = None
    dockerfile: str | None = None
    dockerfile_path: str | None = field(default=None, metadata=LOCAL_ONLY)
    context_dir: str | None = field(default=None, metadata=LOCAL_ONLY)
    context_hash: str | None = None

    _KINDS: ClassVar[tuple[str, ...]] = ("debian_slim", "registry", "dockerfile")

    @classmethod
    def _build(cls, where: str, **raw: Any) -> ImageBase:
        p = Problems(where)
        kind = raw.get("kind")
        if kind not in cls._KINDS:
            p.add(f"base kind {kind!r} is unknown; expected one of {', '.join(cls._KINDS)}")
            p.raise_if_any()
        allowed = {
            "debian_slim": {"kind", "python_version"},
            "registry": {"kind", "ref", "add_python"},
            "dockerfile": {
                "kind",
                "dockerfile",
                "dockerfile_path",
                "context_dir",
                "context_hash",
                "add_python",
            },
        }[kind]
        for key in sorted(k for k, v in raw.items() if v is not None and k not in allowed):
            p.add(f"field {key!r} does not apply to a {kind!r} base")
        out: dict[str, Any] = {"kind": kind}
        if kind == "debian_slim":
            out["python_version"] = check_python_version(
                raw.get("python_version"), "python_version", p
            )
        if kind == "registry":
            out["ref"] = _check_registry_ref(raw.get("ref"), p)
        if kind in ("registry", "dockerfile") and raw.get("add_python") is not None:
            out["add_python"] = check_python_version(raw["add_python"], "add_python", p)
        if kind == "dockerfile":
            text = raw.get("dockerfile")
            if not isinstance(text, str):
                p.add(f"dockerfile={text!r} must be the Dockerfile's text")
            out["dockerfile"] = text
            for key in ("dockerfile_path", "context_dir"):
                if raw.get(key) is not None:
                    out[key] = check_str(raw[key], key, p)
            if raw.get("context_hash") is not None:
                out["context_hash"] = check_hash(raw["context_hash"], "context_hash", p)
        p.raise_if_any()
        return cls(**out)

    def _repr(self) -> str:
        if self.kind == "debian_slim":
            return f"Image.debian_slim(python_version={self.python_version!r})"
        extra = f", add_python={self.add_python!r}" if self.add_python else ""
        if self.kind == "registry":
            return f"Image.from_registry({self.ref!r}{extra})"
        ctx = f", context_dir={self.context_dir!r}" if self.context_dir else ""
        return f"Image.from_dockerfile({self.dockerfile_path or '<dockerfile>'!r}{ctx}{extra})"


# Reference grammar (distribution/reference), restricted to sha256 digests.
_REF_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_REF_DOMAIN = re.compile(
    r"(?:(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
    r"(?:\.(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]))*"
    r"|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?"
)
_REF_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_REF_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_REF_FORM = (
    "expected [registry[:port]/]name[:tag][@sha256:<64 hex>], "
    "e.g. 'python:3.11-slim' or 'ghcr.io/org/app@sha256:<digest>'"
)


def _check_registry_ref(ref: object, problems: Problems) -> str | None:
    if not isinstance(ref, str) or not ref:
        problems.add(f"ref={ref!r} must be a non-empty image reference; {_REF_FORM}")
        return None

    def bad(reason: str) -> None:
        problems.add(f"{ref!r} is not a valid image reference: {reason}; {_REF_FORM}")

    if ref != ref.strip() or any(c.isspace() for c in ref):
        bad("it contains whitespace")
        return None
    rest, _, digest = ref.partition("@")
    if "@" in ref and not _REF_DIGEST.fullmatch(digest):
        bad(f"digest {digest!r} must be 'sha256:' followed by 64 lowercase hex digits")
        return None
    name, tag = rest, None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        name, tag = rest[:colon], rest[colon + 1 :]
        if not _REF_TAG.fullmatch(tag):
            bad(f"tag {tag!r} must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'")
            return None
    if not name:
        bad("the repository name is empty")
        return None
    if len(name) > 255:
        bad(f"the repository name is {len(name)} characters long; the limit is 255")
        return None
    parts = name.split("/")
    first = parts[0]
    if len(parts) > 1 and (
        "." in first or ":" in first or first == "localhost" or first != first.lower()
    ):
        if not _REF_DOMAIN.fullmatch(first):
            bad(f"registry host {first!r} is not a valid host[:port]")
            return None
        parts = parts[1:]
    for comp in parts:
        if not _REF_PATH_COMPONENT.fullmatch(comp):
            bad(
                f"repository path component {comp!r} must be lowercase letters and digits, "
                "optionally separated by '.', '_', '__' or '-'"
            )
            return None
    return ref


_DOCKERFILE_COPY = re.compile(
    r"^\s*(?:ONBUILD\s+)?(?:ADD|COPY)\s+(.*)$", re.IGNORECASE | re.MULTILINE
)


def dockerfile_uses_context(text: str) -> bool:
    """Whether any ADD/COPY may read the build context (errs towards True)."""
    for match in _DOCKERFILE_COPY.finditer(text):
        if not re.match(r"(?:--\S+\s+)*?--from=", match.group(1), re.IGNORECASE):
            return True
    return False

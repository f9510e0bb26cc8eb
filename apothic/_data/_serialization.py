"""How user values travel: cloudpickle inside opaque, JSON-friendly envelopes.

User arguments, results and exceptions are pickled with cloudpickle on the side that has
them and unpickled only where they are used (the client or the function container), never
in workflow code: a workflow forwards a :class:`CloudPickled` untouched. Control data
(everything else) is plain dataclasses, which Temporal's JSON converter shows readably in
the Temporal UI.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import sys
from typing import Any

PY_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
# Temporal refuses a single payload over 2 MiB; leave room for the envelope and base64. Larger
# arguments and results go to the blob store (``apothic._data._blobs``); an app's code may not.
MAX_INLINE_BYTES = 1_400_000


@dataclasses.dataclass(frozen=True)
class CloudPickled:
    """An opaque cloudpickle blob with readable metadata.

    Attributes:
        data: the pickle, base64-encoded so that it nests in JSON control data.
        py: ``major.minor`` of the Python that pickled it (pickles do not cross versions).
        kind: what it holds: ``args``, ``result``, ``exception``, ``code``.
        qualname: a readable name of what was pickled.
        size: length of the raw pickle in bytes.
        sha256: first 16 hex digits of the raw pickle's sha256.
        blob: when the pickle is in the blob store (``data`` is then empty), the reference to
            it: ``driver`` plus that driver's claim (key, hash); see ``apothic._data._blobs``.
    """

    data: str
    py: str = PY_VERSION
    kind: str = ""
    qualname: str = ""
    size: int = 0
    sha256: str = ""
    blob: dict[str, str] | None = None

    @classmethod
    def dump(cls, value: Any, *, kind: str, qualname: str = "") -> "CloudPickled":
        """Pickle ``value`` (functions and classes of the caller's script by value)."""
        import cloudpickle

        raw = cloudpickle.dumps(value, protocol=5)
        return cls.from_bytes(raw, kind=kind, qualname=qualname or _name_of(value))

    @classmethod
    def from_bytes(cls, raw: bytes, *, kind: str, qualname: str = "") -> "CloudPickled":
        return cls(
            data=base64.b64encode(raw).decode("ascii"),
            kind=kind,
            qualname=qualname,
            size=len(raw),
            sha256=hashlib.sha256(raw).hexdigest()[:16],
        )

    def raw(self) -> bytes:
        return base64.b64decode(self.data)

    def load(self, raw: bytes | None = None) -> Any:
        """Unpickle. Runs arbitrary code: call only on the client or in a container.

        ``raw`` is the pickle read from the blob store when this is a reference (use
        ``apothic._data._blobs.load``, which reads it).
        """
        import cloudpickle

        if self.py and self.py != PY_VERSION:
            from ..exceptions import InvalidError

            raise InvalidError(
                f"this {self.kind or 'payload'} was pickled by Python {self.py} but is being loaded by "
                f"Python {PY_VERSION}; pickles do not cross Python versions. Fix: run the client and the "
                f"function's image on the same Python minor version."
            )
        if raw is None:
            if self.blob is not None:
                raise ValueError(f"this {self.kind or 'payload'} is in the blob store: load it with apothic._data._blobs.load")
            raw = self.raw()
        return cloudpickle.loads(raw)


def _name_of(value: Any) -> str:
    name = getattr(value, "__qualname__", None) or type(value).__qualname__
    return str(name)[:200]

"""Providers: each is the only code that talks to its backend.

``process`` (this host, the embedded default) runs a function container as a child process.
"""

from .process import ProcessHandle, ProcessProvider

__all__ = ["ProcessHandle", "ProcessProvider"]

"""The ``apothic`` command line: the parser, the commands and the app-file loader."""

from ._cli import main, run

__all__ = ["main", "run"]

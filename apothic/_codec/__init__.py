"""Apothic's codec server: readable payloads in the Temporal Web UI and CLI.

``apothic codec-server [--port P]`` (or ``python -m apothic._codec``) serves Temporal's
remote-codec protocol (``_server``), rendering Apothic's payloads (``_render``: JSON control
data with each pickled value shown as text; ``_values``: unpickling and rendering without
running the user's code). The embedded default starts one beside the dev server
(``_background``) and gives its URL to the Web UI.
"""

from ._background import codec_url
from ._command import add_codec_parser, main

__all__ = ["add_codec_parser", "codec_url", "main"]

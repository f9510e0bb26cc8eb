"""The embedded default's codec server: started beside the dev server, stopped by ``apothic stop``.

Like the control worker it runs detached (``python -m apothic._codec``), logs to
``$APOTHIC_HOME/logs/codec.log`` and is registered as ``$APOTHIC_HOME/run/codec-<pid>.pid``.
"""

from __future__ import annotations

import os
import sys

from .._control._config import ServerSettings, Settings

# What the command line of the background codec server holds (its pid file is checked by it).
COMMAND_MARKER = b"apothic._codec"


def codec_host(server: ServerSettings) -> str:
    return server.ip if server.ip not in ("0.0.0.0", "::", "") else "127.0.0.1"


def codec_url(server: ServerSettings) -> str:
    """Where the codec server of ``server``'s settings answers (given to the Web UI)."""
    return f"http://{codec_host(server)}:{server.codec_port}"


def codec_missing(settings: Settings) -> bool:
    """Whether the embedded default wants a codec server and none runs (none of this home, and
    nothing else answers on its port)."""
    from .._control._embedded import live_pids, port_open

    server = settings.server
    return server.codec_server and not live_pids("codec") and not port_open(codec_host(server), server.codec_port, 0.05)


def ensure_codec(settings: Settings) -> None:
    """Start the codec server in the background unless one runs (or its port is taken)."""
    from .._control._embedded import _spawn_detached, register_pid

    if not codec_missing(settings):
        return
    env = dict(os.environ)
    env.setdefault("APOTHIC_CONFIG", settings.config_file)
    proc = _spawn_detached([sys.executable, "-m", "apothic._codec"], "codec.log", env=env)
    register_pid("codec", proc.pid)

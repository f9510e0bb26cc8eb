"""Python in the docker provider's images: probing an image for it, and the runtime layer's
script, which finds it (or installs the distribution's ``python3`` with apt) and installs the
Apothic runtime on it.

Functions travel as cloudpickle, which does not cross minor versions, so the Python in the
image must be the version the spec asks for. A Debian/Ubuntu image without it gets its
distribution's ``python3`` through apt when that release ships the wanted version
(:data:`DISTRO_PYTHON`); no relocatable ("managed") CPython is installed.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .docker_layout import RUNTIME_PYTHON, RUNTIME_VENV, SOURCES_ROOT, WHEELS_MOUNT

if TYPE_CHECKING:
    import docker

__all__ = ["DISTRO_PYTHON", "EXIT_NO_PYTHON", "PROBE_SCRIPT", "no_python_reason", "probe_python", "runtime_script"]

#: The exit status of the runtime script when the image has no suitable Python.
EXIT_NO_PYTHON = 97
#: Debian/Ubuntu releases whose `python3` package is the given version.
DISTRO_PYTHON = {
    "bullseye": "3.9",
    "bookworm": "3.11",
    "trixie": "3.13",
    "jammy": "3.10",
    "noble": "3.12",
}

_probe_cache: dict[tuple[str, str], dict[str, str]] = {}

PROBE_SCRIPT = r"""
want="$1"
for c in "python$want" python3 python; do
  p=$(command -v "$c" 2>/dev/null) || continue
  v=$("$p" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || continue
  if [ "$v" = "$want" ]; then
    echo "python=$p"
    "$p" -c 'import apothic.runtime' >/dev/null 2>&1 && echo "runtime=1"
    break
  fi
done
if (ldd --version 2>&1 || true) | grep -qi musl; then echo "libc=musl"; else echo "libc=glibc"; fi
"""


def probe_python(client: docker.DockerClient, image_id: str, want: str) -> dict[str, str]:
    """Run a throwaway container that reports the image's Python ``want`` (blocking, cached)."""
    key = (image_id, want)
    if key not in _probe_cache:
        ct = client.containers.create(
            image_id, ["-c", PROBE_SCRIPT, "probe", want], entrypoint=["/bin/sh"], network_mode="none", user="0"
        )
        try:
            ct.start()
            ct.wait(timeout=120)
            text = ct.logs().decode("utf-8", "replace")
        finally:
            ct.remove(force=True, v=True)
        found = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        _probe_cache[key] = found
    return _probe_cache[key]


def no_python_reason(want: str) -> str:
    """Why a build failed with :data:`EXIT_NO_PYTHON`, and the fix."""
    return (
        f"the image has no Python {want} (looked for python{want}, python3 and python), and "
        f"no managed CPython can be installed on this machine; Fix: start from an image that "
        f"has Python {want} (Image.debian_slim({want!r}), or a python:{want}-slim based image), "
        "or use Image.from_dockerfile(...) with a Dockerfile that installs it"
    )


def runtime_script(want: str, requirements: Iterable[str]) -> str:
    """The build script of the runtime layer: find (or apt-install) Python ``want``, make the
    runtime venv, install Apothic's wheel and ``requirements`` pinned to this host's versions."""
    distro = " ".join(f"{k}:{v}" for k, v in DISTRO_PYTHON.items())
    reqs = " ".join(shlex.quote(r) for r in requirements)
    return f"""set -e
want={want}
PY=
find_python() {{
  for c in "python$want" python3 python; do
    p=$(command -v "$c" 2>/dev/null) || continue
    # The interpreter itself, not a venv's link to it (an Apothic image as a base).
    p=$(readlink -f "$p" 2>/dev/null || echo "$p")
    if "$p" -c "import sys; raise SystemExit(0 if '%d.%d' % sys.version_info[:2] == '$want' else 1)" 2>/dev/null; then
      PY=$p; return 0
    fi
  done
  return 1
}}
if ! find_python && command -v apt-get >/dev/null 2>&1 && [ -r /etc/os-release ]; then
  codename=$(. /etc/os-release && echo "${{VERSION_CODENAME:-}}")
  for pair in {distro}; do
    if [ "$pair" = "$codename:$want" ]; then
      echo "apothic: no Python $want in the image; installing $codename's python3 with apt"
      apt-get update -q
      apt-get install -y -q --no-install-recommends python3 python3-venv python3-pip ca-certificates
      rm -rf /var/lib/apt/lists/*
      find_python || true
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "apothic: no Python $want in this image (looked for python$want, python3, python)" >&2
  exit {EXIT_NO_PYTHON}
fi
echo "apothic: runtime on $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"
if ! "$PY" -m venv --system-site-packages {RUNTIME_VENV}; then
  echo "apothic: python -m venv could not install pip (no ensurepip?); bootstrapping pip from a wheel"
  rm -rf {RUNTIME_VENV}
  "$PY" -m venv --without-pip --system-site-packages {RUNTIME_VENV}
  W=$(ls {WHEELS_MOUNT}/pip-*.whl | head -n 1)
  {RUNTIME_PYTHON} "$W/pip" install --no-index -q "$W"
fi
{RUNTIME_PYTHON} -m pip install --no-deps --force-reinstall {WHEELS_MOUNT}/apothic-*.whl
{RUNTIME_PYTHON} -m pip install -c {WHEELS_MOUNT}/host-constraints.txt {reqs}
mkdir -p {SOURCES_ROOT}
site=$({RUNTIME_PYTHON} -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo {SOURCES_ROOT} > "$site/apothic-sources.pth"
{RUNTIME_PYTHON} -c 'import apothic.runtime, sys; print("apothic: runtime importable on", sys.version[:7])'
"""

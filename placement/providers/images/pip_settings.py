"""This host's package-index settings, for the builds of images and venvs.

Both builders install with this host's pip configuration (index URLs, find-links,
constraints, trusted hosts) and trust this host's CA bundle, so that an install that works
here works in an image build: the docker builder writes them as a ``pip.conf`` and uv
arguments for its build containers, the venv builder passes them to pip and uv directly.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import os
import ssl
import subprocess
import sys
from collections.abc import Mapping

from apothic._image import PipInstallStep, UvPipInstallStep

__all__ = [
    "QUIET_PIP_ENV",
    "PipSettings",
    "host_ca_bundle",
    "host_pip_settings",
    "step_pip_options",
]

#: Environment that keeps pip from asking questions or checking its own version in builds.
QUIET_PIP_ENV: Mapping[str, str] = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}


@dataclasses.dataclass(frozen=True)
class PipSettings:
    """The package-index settings of this host's pip, to reproduce them elsewhere.

    Attributes:
        index_url: ``index-url``, or None for pip's default.
        extra_index_urls: ``extra-index-url`` values.
        find_links: ``find-links`` values (folders, files or URLs).
        constraints: ``constraint`` files.
        trusted_hosts: ``trusted-host`` values.
        cert: the CA bundle pip uses, when configured.
        no_index: ``no-index``.
    """

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()
    trusted_hosts: tuple[str, ...] = ()
    cert: str | None = None
    no_index: bool = False

    def local_paths(self) -> list[str]:
        """Host folders and files these settings refer to (file URLs, find-links, constraints)."""
        out = []
        for value in (
            *(u for u in (self.index_url, *self.extra_index_urls) if u),
            *self.find_links,
            *self.constraints,
        ):
            path = value[len("file://") :] if value.startswith("file://") else value
            if "://" not in path and os.path.isabs(path) and os.path.exists(path):
                path = os.path.normpath(path)
                if os.path.basename(path) == "simple" and value in (self.index_url, *self.extra_index_urls):
                    path = os.path.dirname(path)  # a local index links to files beside simple/
                out.append(path)
        return sorted(set(out))

    def relocated(self, mapping: Mapping[str, str]) -> PipSettings:
        """These settings with host paths (keys of ``mapping``) replaced by their values."""

        def move(value: str) -> str:
            scheme = "file://" if value.startswith("file://") else ""
            path = value[len(scheme) :]
            for host, inside in mapping.items():
                if path == host or path.startswith(host.rstrip("/") + "/"):
                    return scheme + inside + path[len(host) :]
            return value

        return dataclasses.replace(
            self,
            index_url=move(self.index_url) if self.index_url else None,
            extra_index_urls=tuple(move(u) for u in self.extra_index_urls),
            find_links=tuple(move(u) for u in self.find_links),
            constraints=tuple(move(u) for u in self.constraints),
        )

    def pip_conf(self, cert_path: str | None) -> str:
        """A ``pip.conf`` with these settings; ``cert_path`` replaces :attr:`cert`."""
        lines = ["[global]"]
        if self.index_url:
            lines.append(f"index-url = {self.index_url}")
        if self.extra_index_urls:
            lines.append(f"extra-index-url = {' '.join(self.extra_index_urls)}")
        if self.find_links:
            lines.append(f"find-links = {' '.join(self.find_links)}")
        if self.constraints:
            lines.append(f"constraint = {' '.join(self.constraints)}")
        if self.trusted_hosts:
            lines.append(f"trusted-host = {' '.join(self.trusted_hosts)}")
        if self.no_index:
            lines.append("no-index = true")
        if cert_path:
            lines.append(f"cert = {cert_path}")
        return "\n".join(lines) + "\n"

    def uv_args(self) -> list[str]:
        """The same settings as ``uv pip install`` options (uv reads no pip.conf)."""
        args = ["--index-strategy", "unsafe-best-match"]
        if self.no_index:
            args.append("--no-index")
        if self.index_url:
            args += ["--index-url", self.index_url]
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        for link in self.find_links:
            args += ["--find-links", link]
        for constraint in self.constraints:
            args += ["--constraint", constraint]
        return args


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(value.split()) if value else ()


@functools.cache
def host_pip_settings() -> PipSettings:
    """This host's pip index configuration (files and ``PIP_*`` variables), read once.

    Reads ``python -m pip config list`` of the running interpreter. Precedence follows pip:
    environment over the ``install`` section over ``global``. Returns defaults when pip
    cannot be asked.
    """
    try:
        text = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        text = ""
    found: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        key, sep, raw = line.partition("=")
        if not sep or "." not in key:
            continue
        section, _, name = key.rpartition(".")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw.strip("'\"")
        found.setdefault(name, {})[section] = str(value)

    def get(name: str) -> str | None:
        variants = found.get(name, {})
        for section in (":env:", "install", "global"):
            if section in variants:
                return variants[section]
        return None

    cert = get("cert")
    return PipSettings(
        index_url=get("index-url"),
        extra_index_urls=_split(get("extra-index-url")),
        find_links=_split(get("find-links")),
        constraints=_split(get("constraint")),
        trusted_hosts=_split(get("trusted-host")),
        cert=cert,
        no_index=(get("no-index") or "").lower() in ("1", "true", "yes", "on"),
    )


def host_ca_bundle() -> str | None:
    """The CA bundle this host trusts (pip's ``cert`` setting first), or None."""
    candidates = [
        host_pip_settings().cert,
        os.environ.get("SSL_CERT_FILE"),
        ssl.get_default_verify_paths().cafile,
        "/etc/ssl/certs/ca-certificates.crt",
    ]
    for path in candidates:
        if path and os.path.isfile(path):
            return path
    return None


def step_pip_options(step: PipInstallStep | UvPipInstallStep) -> list[str]:
    """The index options a ``pip_install``/``uv_pip_install`` step adds to the install command."""
    opts = []
    if step.index_url:
        opts += ["--index-url", step.index_url]
    if step.extra_index_url:
        opts += ["--extra-index-url", step.extra_index_url]
    if step.pre:
        opts.append("--pre")
    return opts

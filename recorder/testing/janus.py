"""A real Janus for tests, the demo and the benchmark: installed when missing, configured by us.

`JanusServer` runs Debian's `janus` (1.1.x) with the project's own minimal configuration, the
templates in `deploy/janus/`, written per run into a folder of its own: only the VideoRoom plugin
and the WebSocket and HTTP transports are loaded (through a plugins folder holding links to just
those), both transports listen on 127.0.0.1 only, on ports free for this run, the admin API is
off, there is no STUN or TURN, and ICE candidates are gathered on one interface only. Nothing is
read from /etc. `start()` returns once `GET /janus/info` answers with this run's `server_name`
(another Janus may hold a port), `stop()` ends it with SIGTERM (SIGKILL after a bound), and
`restart()` plays an SFU that goes away and comes back on the same ports.

Janus never gathers candidates on a loopback interface, so it runs inside a `SealedNetwork`
(`recorder/testing/netns.py`): 127.0.0.1 for its API and `SEALED_ADDRESS` on a veth for media,
both private to the namespace. The peers that talk to it must be in the same namespace.

`ensure_janus_installed()` installs the Debian package when it is missing and this process may
(root with apt-get): `apt-get update` once, then `janus` without recommends. Run as a module, this
file is the setup script (`scripts/janus.sh`): `install`, or `check` (install, start in a sealed
network, print what `/janus/info` says, stop).
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recorder.testing.netns import SEALED_INTERFACE, NetworkNamespaceError, SealedNetwork

log = logging.getLogger(__name__)

JANUS_PACKAGE = "janus"  # Debian's package (bookworm: 1.1.2)
JANUS_BINARY = "janus"
CONFIG_TEMPLATES = Path(__file__).resolve().parents[2] / "deploy" / "janus"
VIDEOROOM_LIBRARY = "libjanus_videoroom.so"
TRANSPORT_LIBRARIES = ("libjanus_websockets.so", "libjanus_http.so")
# Where Debian (multiarch) and source builds put the plugin and transport libraries.
JANUS_LIBRARY_DIRS = (
    "/usr/lib/*/janus",
    "/usr/lib/janus",
    "/usr/local/lib/janus",
    "/opt/janus/lib/janus",
)
BIND_ADDRESS = "127.0.0.1"
SESSION_TIMEOUT_S = 60  # Janus' default: a session with no request for this long is destroyed
DEBUG_LEVEL = 4  # Janus' default (info); its log goes to a file in the run folder
RTP_PORT_WINDOW = 1000  # UDP ports Janus may use for media, a window chosen per run
RTP_PORT_FIRST, RTP_PORT_LAST = 20_000, 59_999
READY_TIMEOUT_S = 10.0  # seen ready in < 0.1 s; a loaded CI machine gets far more
READY_POLL_S = 0.02
INFO_TIMEOUT_S = 1.0
STOP_TIMEOUT_S = 5.0  # seen exiting in < 0.5 s after SIGTERM
APT_TIMEOUT_S = 300.0
SERVER_NAME_PREFIX = "room-recorder-janus"


class JanusUnavailableError(RuntimeError):
    """Janus cannot be installed or started here; the message says why (tests skip with it)."""


# --- installing ----------------------------------------------------------------------------------


def janus_library_dir() -> Path | None:
    """The folder whose `plugins/` holds the VideoRoom plugin, or None when Janus is missing."""
    for pattern in JANUS_LIBRARY_DIRS:
        for candidate in sorted(glob.glob(pattern)):
            if (Path(candidate) / "plugins" / VIDEOROOM_LIBRARY).exists():
                return Path(candidate)
    return None


def janus_missing_reason() -> str | None:
    """What is missing for `JanusServer` (None: the binary and the VideoRoom plugin are here)."""
    if shutil.which(JANUS_BINARY) is None:
        return f"the `{JANUS_BINARY}` binary is not installed"
    if janus_library_dir() is None:
        return f"the VideoRoom plugin ({VIDEOROOM_LIBRARY}) is not installed"
    return None


def ensure_janus_installed(*, quiet: bool = True) -> None:
    """Install Debian's janus when it is missing; `JanusUnavailableError` when it cannot be."""
    if janus_missing_reason() is None:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise JanusUnavailableError(
            f"{janus_missing_reason()}, and this process cannot install it (needs root and "
            f"apt-get): run `apt-get install --no-install-recommends {JANUS_PACKAGE}`"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    output = subprocess.DEVNULL if quiet else None
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", JANUS_PACKAGE],
    ):
        log.info("installing janus: %s", " ".join(command))
        try:
            completed = subprocess.run(
                command, env=env, stdout=output, stderr=subprocess.PIPE, text=True,
                timeout=APT_TIMEOUT_S, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise JanusUnavailableError(
                f"`{' '.join(command)}` took over {APT_TIMEOUT_S} s"
            ) from None
        if completed.returncode != 0:
            raise JanusUnavailableError(
                f"`{' '.join(command)}` failed: {completed.stderr.strip()[-500:]}"
            )
    if (reason := janus_missing_reason()) is not None:
        raise JanusUnavailableError(f"janus was installed, yet {reason}")


# --- configuring and running ---------------------------------------------------------------------


def free_port(host: str = BIND_ADDRESS) -> int:
    """A TCP port free on `host` now, in the calling thread's network namespace."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _rtp_port_range() -> str:
    first = RTP_PORT_FIRST + secrets.randbelow(RTP_PORT_LAST - RTP_PORT_FIRST - RTP_PORT_WINDOW)
    return f"{first}-{first + RTP_PORT_WINDOW - 1}"


@dataclass(frozen=True, slots=True)
class JanusConfig:
    """One run's settings, as the templates in `deploy/janus/` take them."""

    server_name: str
    http_port: int
    ws_port: int
    rtp_port_range: str
    ice_interface: str = SEALED_INTERFACE
    session_timeout_s: int = SESSION_TIMEOUT_S
    debug_level: int = DEBUG_LEVEL

    def write(self, folder: Path, library_dir: Path) -> Path:
        """The configuration files in `folder/conf`; returns that folder (Janus' `-F`)."""
        conf = folder / "conf"
        empty = folder / "none"  # no event handlers, no loggers
        plugins, transports = folder / "plugins", folder / "transports"
        for made in (conf, empty, plugins, transports):
            made.mkdir(parents=True, exist_ok=True)
        # Janus loads every library in its plugins and transports folders: ours hold only these.
        wanted = ((plugins, (VIDEOROOM_LIBRARY,)), (transports, TRANSPORT_LIBRARIES))
        for target_dir, names in wanted:
            for name in names:
                link = target_dir / name
                if not link.is_symlink():
                    link.symlink_to(library_dir / target_dir.name / name)
        values: dict[str, Any] = {
            "conf_dir": conf,
            "plugins_dir": plugins,
            "transports_dir": transports,
            "empty_dir": empty,
            "debug_level": self.debug_level,
            "server_name": self.server_name,
            "session_timeout_s": self.session_timeout_s,
            "rtp_port_range": self.rtp_port_range,
            "ice_enforce_list": self.ice_interface,
            "ws_port": self.ws_port,
            "http_port": self.http_port,
            "bind_ip": BIND_ADDRESS,
        }
        if not CONFIG_TEMPLATES.is_dir():
            raise JanusUnavailableError(
                f"the configuration templates are missing: {CONFIG_TEMPLATES}"
            )
        for template in sorted(CONFIG_TEMPLATES.glob("*.jcfg")):
            text = string.Template(template.read_text(encoding="utf-8")).substitute(values)
            (conf / template.name).write_text(text, encoding="utf-8")
        return conf


class JanusServer:
    """One Janus process with the project's configuration, in a sealed network.

    Use as a context manager or `start()`/`stop()`. The network is the caller's (`network=`), so
    the peers can join it, or one of its own.
    """

    def __init__(
        self,
        *,
        network: SealedNetwork | None = None,
        folder: Path | None = None,
        session_timeout_s: int = SESSION_TIMEOUT_S,
    ) -> None:
        self._own_network = network is None
        self._own_folder = folder is None
        self.network = network
        self.folder = folder or Path(tempfile.mkdtemp(prefix="janus-"))
        self._session_timeout_s = session_timeout_s
        self.config: JanusConfig | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # --- where it listens --------------------------------------------------------------------

    @property
    def ws_url(self) -> str:
        """The WebSocket API, what a job's `room.url` names."""
        return f"ws://{BIND_ADDRESS}:{self._config().ws_port}/"

    @property
    def info_url(self) -> str:
        return f"http://{BIND_ADDRESS}:{self._config().http_port}/janus/info"

    @property
    def log_path(self) -> Path:
        return self.folder / "janus.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _config(self) -> JanusConfig:
        if self.config is None:
            raise RuntimeError("the Janus server was never started")
        return self.config

    # --- life --------------------------------------------------------------------------------

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Start Janus and wait until it answers as itself; `JanusUnavailableError` if it won't."""
        if self.running:
            return
        ensure_janus_installed()
        library_dir = janus_library_dir()
        if library_dir is None:
            raise JanusUnavailableError(janus_missing_reason() or "janus is missing")
        if self.network is None:
            try:
                self.network = SealedNetwork.create()
            except NetworkNamespaceError as error:
                raise JanusUnavailableError(f"no sealed network for Janus: {error}") from error
        with self.network.entered():
            if self.config is None:  # a restart keeps the ports: clients reconnect to the same URL
                self.config = JanusConfig(
                    server_name=f"{SERVER_NAME_PREFIX}-{secrets.token_hex(4)}",
                    http_port=free_port(),
                    ws_port=free_port(),
                    rtp_port_range=_rtp_port_range(),
                    session_timeout_s=self._session_timeout_s,
                )
            conf = self.config.write(self.folder, library_dir)
            with open(self.log_path, "ab") as log_file:
                self._process = subprocess.Popen(
                    [JANUS_BINARY, "-F", str(conf), "-o"],
                    stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                )  # fmt: skip
            self.starts += 1
            try:
                self._wait_ready(timeout_s)
            except BaseException:
                self.stop()
                raise
        log.info("janus %s ready at %s (pid %s)", self.config.server_name, self.ws_url, self.pid)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last_problem = "no answer"
        while time.monotonic() < deadline:
            if not self.running:
                raise JanusUnavailableError(
                    f"janus exited at start (code {self._process and self._process.returncode}); "
                    f"its log: {self.log_tail()}"
                )
            info = self._info_or_none()
            if info is not None:
                name = info.get("server-name")
                if name == self._config().server_name:
                    return
                last_problem = f"another server ({name!r}) answers on the port"
            time.sleep(READY_POLL_S)
        raise JanusUnavailableError(
            f"janus did not answer as itself within {timeout_s} s ({last_problem}); "
            f"its log: {self.log_tail()}"
        )

    def _info_or_none(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(self.info_url, timeout=INFO_TIMEOUT_S) as response:
                info = json.loads(response.read())
        except (OSError, urllib.error.URLError, ValueError):
            return None
        return info if isinstance(info, dict) else None

    def info(self) -> dict[str, Any]:
        """What `GET /janus/info` says now (from inside the network)."""
        network = self.network
        if network is None:
            raise RuntimeError("the Janus server was never started")
        with network.entered():
            info = self._info_or_none()
        if info is None:
            raise ConnectionError(f"janus does not answer at {self.info_url}")
        return info

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL after `timeout_s`; idempotent. The network stays for a restart."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("janus did not exit within %g s of SIGTERM: killed", timeout_s)
                process.kill()
                process.wait()

    def restart(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Stop and start again on the same ports: every session and room on it is gone."""
        self.stop()
        self.start(timeout_s)

    def close(self) -> None:
        """Stop Janus; release the network and the run folder if they are ours."""
        self.stop()
        if self._own_network and self.network is not None:
            self.network.close()
            self.network = None
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> JanusServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


# --- the setup script ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """`install`: install Janus when missing; `check`: also start it once and show its info."""
    parser = argparse.ArgumentParser(
        prog="scripts/janus.sh", description="Install and check the Janus the tests use."
    )
    parser.add_argument("action", choices=("install", "check"))
    parser.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    args = parser.parse_args(argv)
    try:
        ensure_janus_installed(quiet=True)
        if args.action == "check":
            reason = SealedNetwork.unavailable_reason()
            if reason is not None:
                raise JanusUnavailableError(f"no sealed network: {reason}")
            with JanusServer() as server:
                info = server.info()
            if not args.quiet:
                print(
                    f"{info.get('name')} {info.get('version_string')} answered as "
                    f"{info.get('server-name')}; plugins: {', '.join(info.get('plugins') or {})}; "
                    f"transports: {', '.join(info.get('transports') or {})}"
                )
        elif not args.quiet:
            print(f"janus is installed ({shutil.which(JANUS_BINARY)})")
    except JanusUnavailableError as error:
        print(f"janus: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

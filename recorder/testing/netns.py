"""A sealed network for running a real SFU on one machine: a network namespace of our own.

Janus never gathers ICE candidates on a loopback interface (it skips `IFF_LOOPBACK`, whatever its
`ice_enforce_list` says) and aioice leaves out 127.0.0.1 too, so two WebRTC peers on one machine
can only meet on a real interface, and test traffic must never use the machine's real interfaces.
`SealedNetwork` gives them one that is not real: a new network namespace with `lo` up and a veth
pair whose one end carries `SEALED_ADDRESS`. Nothing in it is routed anywhere else; it disappears
when the last process in it exits and its file descriptor is closed.

Linux keeps the network namespace per thread, and a socket belongs to the namespace of the thread
that created it, as does a child process. So `entered()` moves only the calling thread: while it
is inside, the sockets it opens (an asyncio loop's connections and UDP endpoints included) and the
processes it starts (Janus, a worker) are inside; on exit the thread comes back and those sockets
and processes stay where they were made. Creating one needs CAP_SYS_ADMIN and CAP_NET_ADMIN (root
here); `SealedNetwork.create()` says why when it cannot.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000  # <sched.h>: the network namespace flag of unshare(2) and setns(2)
SEALED_INTERFACE = "veth0"  # the interface the SFU gathers candidates on
SEALED_PEER_INTERFACE = "veth1"  # the veth's other end: it only gives veth0 a carrier
SEALED_ADDRESS = "10.200.0.1"
SEALED_PREFIX_LENGTH = 24
IP_COMMAND_TIMEOUT_S = 5.0
_THREAD_NAMESPACE = "/proc/thread-self/ns/net"


class NetworkNamespaceError(OSError):
    """A network namespace could not be created, configured or entered."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise NetworkNamespaceError(errno, f"{what}: {os.strerror(errno)}")


def _set_thread_namespace(fd: int) -> None:
    """Move the calling thread into the network namespace `fd` refers to (setns(2))."""
    _check(_libc().setns(fd, CLONE_NEWNET), "setns")


def _new_namespace_fd() -> int:
    """A file descriptor holding a new, empty network namespace.

    The namespace is made by a short-lived thread (unshare(2) moves only its caller), so no
    thread of ours stays in it; the descriptor keeps it alive.
    """
    result: dict[str, int | BaseException] = {}

    def make() -> None:
        try:
            _check(_libc().unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
            result["fd"] = os.open(_THREAD_NAMESPACE, os.O_RDONLY | os.O_CLOEXEC)
        except BaseException as error:
            result["error"] = error

    thread = threading.Thread(target=make, name="netns: unshare")
    thread.start()
    thread.join()
    error = result.get("error")
    if isinstance(error, BaseException):
        raise NetworkNamespaceError(f"cannot create a network namespace: {error}") from error
    fd = result["fd"]
    if not isinstance(fd, int):
        raise NetworkNamespaceError("cannot create a network namespace")
    return fd


class SealedNetwork:
    """A network namespace with `lo` up and `SEALED_ADDRESS` on `SEALED_INTERFACE`."""

    def __init__(self, namespace_fd: int) -> None:
        self._fd: int | None = namespace_fd

    @classmethod
    def create(cls) -> SealedNetwork:
        """A new sealed network; `NetworkNamespaceError` saying why when this machine refuses."""
        if shutil.which("ip") is None:
            raise NetworkNamespaceError("the `ip` command (iproute2) is not installed")
        network = cls(_new_namespace_fd())
        try:
            with network.entered():
                for command in (
                    ("link", "set", "lo", "up"),
                    ("link", "add", SEALED_INTERFACE, "type", "veth",
                     "peer", "name", SEALED_PEER_INTERFACE),
                    ("addr", "add", f"{SEALED_ADDRESS}/{SEALED_PREFIX_LENGTH}",
                     "dev", SEALED_INTERFACE),
                    ("link", "set", SEALED_INTERFACE, "up"),
                    ("link", "set", SEALED_PEER_INTERFACE, "up"),
                ):  # fmt: skip
                    _ip(*command)
        except BaseException:
            network.close()
            raise
        log.debug("sealed network ready: %s on %s", SEALED_ADDRESS, SEALED_INTERFACE)
        return network

    @staticmethod
    def unavailable_reason() -> str | None:
        """Why a sealed network cannot be made here (None: it can), without making one."""
        if os.geteuid() != 0:
            return "creating a network namespace needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN)"
        if shutil.which("ip") is None:
            return "the `ip` command (iproute2) is not installed"
        if not os.path.exists(_THREAD_NAMESPACE):
            return f"{_THREAD_NAMESPACE} is missing: not Linux, or /proc is not mounted"
        return None

    @property
    def closed(self) -> bool:
        return self._fd is None

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Run the calling thread inside the network until the block ends (nesting is fine).

        Sockets the thread opens and processes it starts meanwhile stay inside afterwards.
        """
        if self._fd is None:
            raise NetworkNamespaceError("the sealed network is closed")
        original = os.open(_THREAD_NAMESPACE, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _set_thread_namespace(self._fd)
            try:
                yield
            finally:
                _set_thread_namespace(original)
        finally:
            os.close(original)

    def close(self) -> None:
        """Let the namespace go (it ends once no process is left in it); idempotent."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> SealedNetwork:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _ip(*arguments: str) -> None:
    completed = subprocess.run(
        ["ip", *arguments],
        capture_output=True,
        text=True,
        timeout=IP_COMMAND_TIMEOUT_S,
        check=False,
    )
    if completed.returncode != 0:
        raise NetworkNamespaceError(
            f"`ip {' '.join(arguments)}` failed: {completed.stderr.strip() or completed.returncode}"
        )

"""The project's Janus setup: its own minimal configuration, on 127.0.0.1, in a sealed network.

Janus is started from `deploy/janus/` templates written per run: only the VideoRoom plugin and the
HTTP and WebSocket transports, both listening on 127.0.0.1 only, no admin API, no STUN/TURN, ICE
on the sealed network's veth only. The network holds nothing of the machine's.
"""

from __future__ import annotations

import time
from pathlib import Path

import ifaddr

from recorder.testing.janus import BIND_ADDRESS, JanusServer
from recorder.testing.netns import SEALED_ADDRESS, SEALED_INTERFACE, SealedNetwork

TCP_LISTEN = "0A"  # the state column of /proc/net/tcp
STOP_BOUND_S = 3.0  # Janus exits on SIGTERM in < 0.5 s here


def _listening(pid: int) -> set[tuple[str, int]]:
    """The TCP (IPv4) sockets listening in the network namespace of process `pid`."""
    found = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, port = fields[1].split(":")
        if fields[3] == TCP_LISTEN:
            octets = bytes.fromhex(address)[::-1]  # little-endian on x86 and arm
            found.add((".".join(str(o) for o in octets), int(port, 16)))
    return found


def test_janus_runs_our_minimal_configuration_on_loopback_only(
    janus: JanusServer, sealed_network: SealedNetwork
) -> None:
    info = janus.info()
    config = janus.config
    assert config is not None
    assert info["server-name"] == config.server_name
    assert list(info["plugins"]) == ["janus.plugin.videoroom"]
    assert sorted(info["transports"]) == ["janus.transport.http", "janus.transport.websockets"]

    # Janus reads only the run's folder; admin off, no STUN/TURN, ICE on the veth only.
    conf = janus.folder / "conf"
    assert Path(f"/proc/{janus.pid}/cmdline").read_bytes().split(b"\0")[1:3] == [
        b"-F",
        str(conf).encode(),
    ]
    core = (conf / "janus.jcfg").read_text()
    assert f'configs_folder = "{conf}"' in core
    assert f'ice_enforce_list = "{SEALED_INTERFACE}"' in core
    assert "stun_server" not in core and "turn_server" not in core
    for transport in ("janus.transport.http.jcfg", "janus.transport.websockets.jcfg"):
        text = (conf / transport).read_text()
        assert "admin_http = false" in text or "admin_ws = false" in text
        assert f'"{BIND_ADDRESS}"' in text
    assert _listening(janus.pid or 0) == {
        (BIND_ADDRESS, config.http_port),
        (BIND_ADDRESS, config.ws_port),
    }

    # The sealed network: loopback and the veth pair, none of the machine's interfaces.
    adapters = {adapter.name: adapter for adapter in ifaddr.get_adapters()}
    assert set(adapters) == {"lo", SEALED_INTERFACE, "veth1"}
    assert SEALED_ADDRESS in {ip.ip for ip in adapters[SEALED_INTERFACE].ips}


def test_janus_restarts_on_the_same_ports_and_stops_promptly(janus: JanusServer) -> None:
    config = janus.config
    first_pid = janus.pid
    janus.restart()
    assert config is not None
    assert janus.config == config and janus.pid != first_pid
    assert janus.info()["server-name"] == config.server_name
    started = time.monotonic()
    janus.stop()
    assert time.monotonic() - started < STOP_BOUND_S
    assert not janus.running


def test_every_run_is_its_own_server(
    janus: JanusServer, sealed_network: SealedNetwork, tmp_path: Path
) -> None:
    with JanusServer(network=sealed_network, folder=tmp_path / "second") as second:
        assert janus.config is not None and second.config is not None
        assert janus.config.server_name != second.config.server_name
        assert janus.ws_url != second.ws_url
        assert janus.info()["server-name"] == janus.config.server_name
        assert second.info()["server-name"] == second.config.server_name

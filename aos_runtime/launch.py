"""What ``make run`` (services/__main__.py) needs to start and stop honestly.

- ``busy_ports``: every port the suite will listen on is checked *before* anything
  starts; a port another process holds is named with the variable that moves it.
- ``wait_serving`` / ``wait_answering``: a child counts as started only when its
  health check answers *and* the socket listening on its port belongs to that child
  (or one of its forked workers). An answer from whatever else holds the port is not
  taken for ours: with SO_REUSEPORT (AOS_WORKERS > 1) a foreign listener on the same
  port could otherwise answer the probe while our child is still starting.

Which process holds a listening socket, and which processes descend from a child, come
from psutil (on Linux, /proc). Where the system does not tell (macOS without root) the
ownership check is skipped (``listener_pids`` returns None) and the child's health answer,
with the child still running, is all there is.
"""
from __future__ import annotations

import errno
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aos_runtime.config import ENV_VARS


class StartFailure(RuntimeError):
    """A child did not come up as ours; the message says which, why and what to change."""


@dataclass(frozen=True)
class Port:
    variable: str  # the AOS_*_PORT that sets it
    number: int


def suite_ports(env: Mapping[str, str]) -> list[Port]:
    """Every port the suite listens on: each ``AOS_*_PORT`` variable of ENV_VARS (the services,
    the gateway, and any other listener declared there, e.g. a metrics port), as set in ``env``
    or by its default; 0 (the kernel picks one) and unset-without-default are not checked."""
    ports = []
    for var in ENV_VARS:
        if not (var.name.startswith("AOS_") and var.name.endswith("_PORT")):
            continue
        raw = env.get(var.name) or var.default
        if raw and raw.strip().isdigit() and int(raw) > 0:
            ports.append(Port(var.name, int(raw)))
    return ports


def busy_ports(host: str, ports: list[Port]) -> list[str]:
    """One line per port of ``ports`` that cannot be bound on ``host`` now, naming who holds it
    (when /proc tells) and the variable to change. Bound as the servers bind (SO_REUSEADDR,
    no SO_REUSEPORT): a port held by any listener, ours from an earlier run included, is busy."""
    problems = []
    seen: dict[int, str] = {}
    for port in ports:
        if port.number in seen:
            problems.append(f"{port.variable} and {seen[port.number]} are both {port.number}: "
                            f"set {port.variable} to another port")
            continue
        seen[port.number] = port.variable
        family, kind, proto, _, sockaddr = socket.getaddrinfo(host, port.number, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(sockaddr)
            except OSError as exc:
                reason = "in use" if exc.errno == errno.EADDRINUSE else exc.strerror
                problems.append(f"port {port.number} on {host} is {reason}{_held_by(port.number)}: "
                                f"stop that process or set {port.variable} to a free port")
    return problems


def _held_by(port: int) -> str:
    pids = listener_pids(port)
    if not pids:
        return ""
    return " (held by " + ", ".join(f"pid {pid} {describe(pid)}".strip() for pid in sorted(pids)) + ")"


def describe(pid: int) -> str:
    """``pid``'s command line, shortened, for a message ("" when it cannot be read)."""
    try:
        text = " ".join(" ".join(psutil.Process(pid).cmdline()).split())  # one line, whatever argv holds
    except (psutil.Error, ValueError):
        return ""
    return f"'{text[:80]}'" if text else ""


def listener_pids(port: int) -> set[int] | None:
    """The pids with a socket open that listens on TCP ``port`` (any address, IPv4 or IPv6);
    None where the system does not tell (psutil's AccessDenied: macOS without root). A listener
    whose process cannot be read (another user's, without root) appears as pid -1: someone, not us."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return None
    return {c.pid if c.pid is not None else -1 for c in connections
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port}


def process_tree(pid: int) -> set[int]:
    """``pid`` and every live process descended from it (a supervisor's forked workers)."""
    try:
        root = psutil.Process(pid)
        return {pid, *(child.pid for child in root.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


def owned_by(child: subprocess.Popen, port: int) -> bool | None:
    """True when every listener on ``port`` is ``child`` or its descendant (and there is one),
    False when another process listens there too, None when nothing listens yet or /proc
    cannot tell."""
    pids = listener_pids(port)
    if not pids:
        return None
    return pids <= process_tree(child.pid)


def _wait(what: str, port: Port, deadline: float, child: subprocess.Popen,
          answers: Callable[[], bool]) -> None:
    proc_readable = listener_pids(port.number) is not None
    while True:
        if child.poll() is not None:
            raise StartFailure(f"{what} exited with code {child.returncode} before it answered on port "
                               f"{port.number}; its error is above (port taken? set {port.variable})")
        if answers():
            mine = owned_by(child, port.number) if proc_readable else True
            if mine:
                return
            if mine is False:
                others = (listener_pids(port.number) or set()) - process_tree(child.pid)
                raise StartFailure(
                    f"port {port.number} is answered by another process, not by {what} (pid {child.pid})"
                    f"{' — ' + ', '.join(f'pid {p} {describe(p)}' for p in sorted(others)) if others else ''}: "
                    f"stop it or set {port.variable} to a free port")
        if time.monotonic() > deadline:
            raise StartFailure(f"{what} did not answer on port {port.number} in time")
        time.sleep(0.2)


def wait_serving(what: str, host: str, port: Port, deadline: float, child: subprocess.Popen) -> None:
    """Until ``child`` reports SERVING on ``host:port`` from its own socket (StartFailure otherwise)."""
    with grpc.insecure_channel(f"{host}:{port.number}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        def serving() -> bool:
            try:
                return stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == \
                    health_pb2.HealthCheckResponse.SERVING
            except grpc.RpcError:
                return False

        _wait(what, port, deadline, child, serving)


def wait_answering(what: str, url: str, port: Port, deadline: float, child: subprocess.Popen) -> None:
    """Until ``url`` answers 200 from ``child``'s own socket on ``port`` (StartFailure otherwise)."""
    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                return bool(reply.status == 200)
        except OSError:  # not listening yet, or an error status
            return False

    _wait(what, port, deadline, child, answers)

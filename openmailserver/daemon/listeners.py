"""The sockets of every listener, bound by the supervisor before anything starts.

A port that is taken or privileged stops the daemon at once with a message naming the
port, its setting and the fix. The workers inherit the bound sockets.
"""

from __future__ import annotations

import errno
import socket

from ..config import LISTENER_PORTS, Settings


class StartupError(Exception):
    """The daemon cannot start; the message says why and what to do."""


def bind_socket(name: str, host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    setting = LISTENER_PORTS[name]
    try:
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        where = f"{name} port {port} on {host} (setting {setting})"
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"{where} is already in use. Stop the program using it, or choose another port: "
                f"--set {setting}=PORT, OPENMAILSERVER_{setting.upper()}=PORT, or 0 to disable it.") from None
        if exc.errno == errno.EACCES:
            raise StartupError(
                f"{where} needs privileges (ports below 1024). Run as root or with "
                f"CAP_NET_BIND_SERVICE (the systemd unit grants it), use `openmailserver serve --dev` "
                f"for unprivileged ports, or set {setting} to a port >= 1024.") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise StartupError(f"{where}: address {host} is not on this machine; fix the bind/api_host setting."
                               ) from None
        raise StartupError(f"{where}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def bind_all(settings: Settings) -> dict[str, socket.socket]:
    """Every enabled listener's socket, bound and listening; all or none."""
    sockets: dict[str, socket.socket] = {}
    try:
        for name, (host, port) in settings.listeners().items():
            sockets[name] = bind_socket(name, host, port)
    except StartupError:
        for sock in sockets.values():
            sock.close()
        raise
    return sockets

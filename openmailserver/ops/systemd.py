"""sd_notify(3) without a dependency: readiness, reload and stop messages for systemd.

The unit runs the daemon with `Type=notify`; systemd passes the address of its
notification socket in `$NOTIFY_SOCKET` (a path, or `@name` for the abstract
namespace) and waits for `READY=1` before it calls the service started. Every
function here is a no-op when the variable is unset (a daemon started by hand
or by a test), and a failure to notify is logged, never raised: the service
must not stop because its supervisor went away.

`$NOTIFY_SOCKET` is not a setting but systemd's side of the protocol, so it is
read here rather than in `config`.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)

ENV = "NOTIFY_SOCKET"


def _address() -> str | None:
    raw = os.environ.get(ENV, "")
    if not raw:
        return None
    if raw.startswith("@"):
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    # systemd >= 254 may pass vsock:CID:PORT to a VM; we only run on the host.
    log.warning("sd_notify: unsupported %s address %r; not notifying", ENV, raw)
    return None


def notify(*assignments: str) -> bool:
    """Send `VAR=value` lines to systemd as one datagram; False when not under systemd."""
    address = _address()
    if address is None:
        return False
    message = "\n".join(assignments).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message)
    except OSError as exc:
        log.warning("sd_notify %s failed: %s", assignments[0] if assignments else "", exc)
        return False
    return True


def notify_ready(status: str = "") -> bool:
    """Every listener is up: systemd may start units ordered after us."""
    return notify("READY=1", *([f"STATUS={status}"] if status else []))


def notify_reloading(status: str = "") -> bool:
    """A reload starts; `notify_ready()` ends it (systemd >= 253 wants MONOTONIC_USEC with it)."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *([f"STATUS={status}"] if status else []))


def notify_stopping(status: str = "") -> bool:
    """Shutdown has begun."""
    return notify("STOPPING=1", *([f"STATUS={status}"] if status else []))


def notify_status(status: str) -> bool:
    return notify(f"STATUS={status}")

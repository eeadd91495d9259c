"""sd_notify over real datagram sockets: a path, the abstract namespace, and no socket at all."""

from __future__ import annotations

import os
import socket
import time

import pytest

from openmailserver.ops import systemd


@pytest.fixture
def receiver(tmp_path, monkeypatch):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    yield sock
    sock.close()


def _fields(data: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in data.decode().split("\n"))


def test_ready_stopping_and_status_reach_a_path_socket(receiver):
    assert systemd.notify_ready("serving smtp 25") is True
    assert _fields(receiver.recv(4096)) == {"READY": "1", "STATUS": "serving smtp 25"}
    assert systemd.notify_stopping() is True
    assert receiver.recv(4096) == b"STOPPING=1"
    assert systemd.notify_status("draining") is True
    assert receiver.recv(4096) == b"STATUS=draining"


def test_reloading_carries_the_monotonic_timestamp(receiver):
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert systemd.notify_reloading() is True
    message = _fields(receiver.recv(4096))
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert message["RELOADING"] == "1" and before <= int(message["MONOTONIC_USEC"]) <= after


def test_abstract_namespace_address(monkeypatch):
    name = f"openmailserver-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.notify_ready() is True
        assert sock.recv(4096) == b"READY=1"


def test_no_op_without_systemd(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify_ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert systemd.notify_stopping() is False


def test_a_vanished_manager_is_logged_not_raised(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert systemd.notify_ready() is False
    assert "sd_notify READY=1 failed" in caplog.text
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert systemd.notify_ready() is False
    assert "unsupported NOTIFY_SOCKET address" in caplog.text

"""Dovecot imaptest's scripted tests, played against the real daemon.

Each script is one test. A script gated on capabilities we do not advertise is
reported as skipped-by-capability by the runner, and the test checks that the
gate is genuine; every other script must pass: all base-protocol
(IMAP4rev1-only) scripts and all scripts whose capabilities we advertise. The
counts (run, passed, skipped by capability) are printed at the end.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Iterator

import pytest

from conftest import Daemon
from imaptest.runner import Runner, load_scripts, parse_script

SCRIPTS_DIR = Path(os.environ.get(
    "IMAPTEST_SCRIPTS", Path(__file__).resolve().parents[3] / "shared" / "imaptest" / "scripts"))
SCRIPTS = load_scripts(SCRIPTS_DIR)
USER, PASSWORD = "tester@conf.test", "imaptest password 1"
ADVERTISED = {"IMAP4REV1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE", "UNSELECT", "CHILDREN",
              "UIDPLUS", "MOVE", "SPECIAL-USE", "AUTH=PLAIN"}
RESULTS: dict[str, str] = {}


class _Summary:
    """Prints the script counts in pytest's terminal summary."""

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not RESULTS:
            return
        counts = {s: sum(1 for v in RESULTS.values() if v == s) for s in ("passed", "failed", "skipped")}
        terminalreporter.write_line(
            f"imaptest scripts: {len(RESULTS)} run, {counts['passed']} passed, {counts['failed']} failed, "
            f"{counts['skipped']} skipped by capability")


@pytest.fixture(scope="module")
def imaptest_daemon(tmp_path_factory, request) -> Iterator[Daemon]:
    if not request.config.pluginmanager.has_plugin("imaptest-summary"):
        request.config.pluginmanager.register(_Summary(), "imaptest-summary")
    daemon = Daemon(tmp_path_factory.mktemp("imaptest"), "conf").start()
    daemon.create_mailbox("tester", password=PASSWORD)
    try:
        yield daemon
    finally:
        try:
            daemon.stop()
        finally:
            daemon.kill()


def test_the_scripts_are_there():
    assert len(SCRIPTS) >= 50, f"imaptest scripts not found in {SCRIPTS_DIR}"


def test_the_daemon_advertises_what_the_gates_assume(imaptest_daemon):
    with socket.create_connection(("127.0.0.1", int(imaptest_daemon.settings["imap_port"])), timeout=10) as sock:
        greeting = sock.recv(4096).decode()
    advertised = set(greeting.split("[CAPABILITY ", 1)[1].split("]", 1)[0].upper().split())
    assert advertised - {"STARTTLS", "LOGINDISABLED"} == ADVERTISED


_BROKEN = {
    "wrong value": "messages: 1\n\nok fetch 1 (rfc822.size)\n* 1 fetch (rfc822.size 1)\n",
    "missing reply": "messages: 1\n\nok noop\n* 1 fetch (flags ())\n",
    "banned reply": "messages: 1\n\nok fetch 1 flags\n! 1 fetch (flags ())\n",
    "wrong status": "messages: 1\n\nno noop\n",
    "wrong code": "state: created\n\nappend $mailbox\nok [trycreate]\n",
    "extra reply": "messages: 1\nignore_extra_untagged: no\n\nok fetch 1 uid\n",
    "variable mismatch": "messages: 2\n\nok fetch 1 uid\n* 1 fetch (uid $u)\nok fetch 2 uid\n* 2 fetch (uid $u)\n",
    "unexpected bad": "messages: 1\n\nok fetch 1:x flags\n",
    "relative sequence": "connections: 2\nmessages: 2\n\n1 ok store 1 +flags \\deleted\n1 ok expunge\n"
                         "2 ok noop\n* $2 expunge\n",
    "flags must be complete": "messages: 1\n\nok store 1 flags (\\seen \\flagged)\n* 1 fetch (flags (\\seen))\n",
}


@pytest.mark.parametrize("case", sorted(_BROKEN))
def test_the_runner_catches_wrong_expectations(imaptest_daemon, tmp_path, case):
    """A runner that cannot fail proves nothing: each of these scripts is wrong."""
    path = tmp_path / case.replace(" ", "-")
    path.write_text(_BROKEN[case])
    script = parse_script(path, SCRIPTS_DIR / "default.mbox")
    runner = Runner("127.0.0.1", int(imaptest_daemon.settings["imap_port"]), USER, PASSWORD)
    result = runner.run(script)
    assert result.status == "failed", f"{case}: the runner accepted a wrong expectation"


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_script(imaptest_daemon, script):
    runner = Runner("127.0.0.1", int(imaptest_daemon.settings["imap_port"]), USER, PASSWORD)
    result = runner.run(script)
    RESULTS[script.name] = result.status
    if result.status == "skipped":
        missing = {c.upper() for c in script.capabilities} - ADVERTISED
        assert missing, f"{script.name} was skipped although we advertise {script.capabilities}"
        return
    assert result.status == "passed", f"{script.name}: {result.message}\n{imaptest_daemon.output()[-2000:]}"

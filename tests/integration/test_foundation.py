"""The daemon's foundation over real sockets: health, auth, mailboxes, aliases, keys, CLI, shutdown."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest


def test_health_checks_every_component(daemon):
    body = httpx.get(f"{daemon.api_url}/health").json()
    assert body["status"] == "ok"
    assert body["database"]["status"] == "ok" and body["database"]["domains"] == 1
    assert body["disk"]["status"] == "ok" and body["disk"]["free_bytes"] > 0
    assert set(body["listeners"]) >= {"api", "smtp"}
    assert all(check["status"] == "ok" for check in body["listeners"].values())


def test_mailbox_creation_in_open_mailserver_shape(daemon):
    created = daemon.create_mailbox("agent")
    assert set(created) == {"mailbox", "password", "api_key"}
    assert created["mailbox"]["email"] == "agent@a.test"
    assert created["mailbox"]["active"] is True and "id" in created["mailbox"] and "quota" in created["mailbox"]
    assert len(created["password"]) >= 16  # generated
    assert created["api_key"]["scopes"] == ["mail:read", "mail:send"]
    key = created["api_key"]["key"]
    # The mailbox key sees its own mailbox, with either header.
    with daemon.http(key) as client:
        assert client.get("/v1/mailboxes/agent@a.test").json()["email"] == "agent@a.test"
    bearer = httpx.get(f"{daemon.api_url}/v1/mailboxes/agent@a.test", headers={"Authorization": f"Bearer {key}"})
    assert bearer.status_code == 200
    # A mailbox on a new domain adds the domain (with its DKIM key).
    other = daemon.create_mailbox("ops", "second.test", password="correct horse battery")
    assert other["password"] == "correct horse battery"
    with daemon.http() as client:
        listed = client.get("/v1/mailboxes").json()
        assert {m["email"] for m in listed} == {"agent@a.test", "ops@second.test"}
        assert client.post("/v1/mailboxes", json={"local_part": "agent", "domain": "a.test"}).status_code == 409
    assert httpx.get(f"{daemon.api_url}/health").json()["database"]["domains"] == 2


@pytest.mark.parametrize("local,domain", [
    ("../x", "a.test"),
    ("", "a.test"),
    ("x", "bad_domain"),
    ("x", "-bad.test"),
    ("x", ""),
    ("a" * 65, "a.test"),
    ("x", ("d" * 60 + ".") * 5 + "test"),
    ("a/b", "a.test"),
    ("a..b", "a.test"),
    ("x\u0000y", "a.test"),
    ("x", "a.test/../../etc"),
    (5, "a.test"),
])
def test_invalid_addresses_are_refused_with_422(daemon, local, domain):
    with daemon.http() as client:
        response = client.post("/v1/mailboxes", json={"local_part": local, "domain": domain})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_address" and body["message"]
    assert not (daemon.data_dir / "etc").exists()


def test_keys_and_scopes(daemon):
    alice = daemon.create_mailbox("alice")
    bob = daemon.create_mailbox("bob")
    no_key = httpx.get(f"{daemon.api_url}/v1/mailboxes")
    assert no_key.status_code == 401 and no_key.json()["error"] == "unauthorized"
    with daemon.http("om_" + "a" * 40) as client:
        wrong = client.get("/v1/mailboxes")
    assert wrong.status_code == 403 and wrong.json()["error"] == "forbidden"
    with daemon.http(alice["api_key"]["key"]) as client:
        assert client.get("/v1/mailboxes").status_code == 403  # admin only
        assert client.post("/v1/mailboxes", json={"local_part": "x", "domain": "a.test"}).status_code == 403
        assert client.get("/v1/mailboxes/bob@a.test").status_code == 404  # not hers to see
        assert client.post("/v1/mailboxes/bob@a.test/keys").status_code == 404
        mine = client.get("/v1/keys").json()
        assert [k["mailbox"] for k in mine] == ["alice@a.test"]
        assert "key" not in mine[0] and "key_hash" not in mine[0]
        assert client.delete(f"/v1/keys/{bob['api_key']['id']}").status_code == 404
        # She can mint a second key and revoke the first.
        second = client.post("/v1/mailboxes/alice@a.test/keys", json={"name": "laptop"})
        assert second.status_code == 201
    with daemon.http(second.json()["key"]) as client:
        assert client.delete(f"/v1/keys/{alice['api_key']['id']}").status_code == 204
    with daemon.http(alice["api_key"]["key"]) as client:
        assert client.get("/v1/mailboxes/alice@a.test").status_code == 403  # revoked
    with daemon.http() as client:
        keys = client.get("/v1/keys").json()
        assert len(keys) == 4  # admin, alice's first (revoked), bob's, alice's second
        assert [k["id"] for k in keys if k["revoked_at"]] == [alice["api_key"]["id"]]


def test_bad_requests_get_json_errors_never_500(daemon):
    with daemon.http() as client:
        cases = [
            client.post("/v1/mailboxes", content=b"{not json"),
            client.post("/v1/mailboxes", content=b"[1, 2]"),
            client.post("/v1/mailboxes", content=b""),
            client.post("/v1/mailboxes", content=b"\xff\xfe"),
            client.post("/v1/mailboxes", json={"local_part": "q", "domain": "a.test", "quota": "big"}),
            client.post("/v1/mailboxes", json={"local_part": "q", "domain": "a.test", "password": "short"}),
            client.post("/v1/mailboxes", content=b"x" * (2 * 1024 * 1024)),
            client.get("/v1/nothing-here"),
            client.put("/v1/mailboxes"),
            client.get("/v1/mailboxes/not-an-address"),
            client.get("/v1/mailboxes/nobody@a.test"),
        ]
    statuses = [r.status_code for r in cases]
    assert statuses == [400, 400, 400, 400, 422, 422, 413, 404, 405, 422, 404]
    for response in cases:
        body = response.json()
        assert set(body) >= {"error", "message"} and "Traceback" not in response.text


def test_aliases(daemon):
    daemon.create_mailbox("alice")
    with daemon.http() as client:
        made = client.post("/v1/aliases", json={"source": "sales@a.test", "destination": "alice@a.test"})
        assert made.status_code == 201
        assert set(made.json()) >= {"id", "source", "destination"}
        assert client.post("/v1/aliases", json={"source": "sales@a.test", "destination": "alice@a.test"}
                           ).status_code == 409
        nowhere = client.post("/v1/aliases", json={"source": "x@a.test", "destination": "ghost@a.test"})
        assert nowhere.status_code == 422 and "not a local mailbox" in nowhere.json()["message"]
        foreign = client.post("/v1/aliases", json={"source": "x@elsewhere.test", "destination": "alice@a.test"})
        assert foreign.status_code == 422
        assert client.post("/v1/aliases", json={"source": "@a.test", "destination": "alice@a.test"}
                           ).status_code == 201
        assert [a["source"] for a in client.get("/v1/aliases").json()] == ["@a.test", "sales@a.test"]
        assert client.delete("/v1/aliases/sales@a.test").status_code == 204
        assert client.delete("/v1/aliases/sales@a.test").status_code == 404


def test_sigterm_stops_within_ten_seconds(daemon):
    started = time.monotonic()
    assert daemon.stop(timeout=10) == 0
    assert time.monotonic() - started < 10
    assert not (daemon.data_dir / "openmailserver.pid").exists()


def test_port_in_use_names_the_port_and_the_fix(make_daemon):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        daemon = make_daemon("busy", start=False, smtp_port=port)
        daemon.start(wait=False)
        assert daemon.proc.wait(timeout=30) != 0
        out = daemon.output()
        assert f"port {port}" in out and "smtp_port" in out and "already in use" in out
    finally:
        blocker.close()


def test_init_is_idempotent_and_logs_hold_no_secrets(make_daemon):
    daemon = make_daemon("fresh", start=False)
    first = json.loads(daemon.cli("init", "--json").stdout)
    assert first["changed"] is True and any("DKIM" in item for item in first["created"])
    assert first["admin_key"] is None  # the admin_api_key setting is the admin key
    again = daemon.cli("init")
    assert "nothing changed" in again.stdout
    daemon.start()
    created = daemon.create_mailbox("secretive", password="hunter2hunter2")
    with daemon.http(created["api_key"]["key"]) as client:
        client.get("/v1/mailboxes/secretive@fresh.test")
    daemon.stop()
    logs = (daemon.data_dir / "logs" / "openmailserver.log").read_text()
    lines = [json.loads(line) for line in logs.splitlines()]
    assert lines and all({"time", "level", "message"} <= set(entry) for entry in lines)
    for secret in (daemon.admin_key, created["api_key"]["key"], "hunter2hunter2", created["password"]):
        assert secret not in logs and secret not in daemon.output()


def test_generated_admin_key_is_printed_once(make_daemon):
    daemon = make_daemon("gen", start=False, admin_api_key="")
    first = daemon.cli("init").stdout
    key = next(word for word in first.split() if word.startswith("om_"))
    assert "shown once" in first
    assert "om_" not in daemon.cli("init").stdout
    daemon.start()
    with daemon.http(key) as client:
        assert client.get("/v1/mailboxes").status_code == 200


def test_cli_administration(make_daemon):
    daemon = make_daemon("cli")
    added = json.loads(daemon.cli("mailbox", "add", "carol@cli.test", "--password", "s3cret-pass", "--json").stdout)
    assert added["mailbox"]["email"] == "carol@cli.test" and added["api_key"]["key"].startswith("om_")
    # The running daemon sees what the CLI wrote.
    with daemon.http(added["api_key"]["key"]) as client:
        assert client.get("/v1/mailboxes/carol@cli.test").status_code == 200
    assert "carol@cli.test" in daemon.cli("mailbox", "list").stdout
    assert json.loads(daemon.cli("mailbox", "passwd", "carol@cli.test", "--json").stdout)["password"]
    bad = daemon.cli("mailbox", "add", "../evil@cli.test", check=False)
    assert bad.returncode == 1 and "error" in bad.stderr
    daemon.cli("alias", "add", "info@cli.test", "carol@cli.test")
    assert json.loads(daemon.cli("alias", "list", "--json").stdout)[0]["source"] == "info@cli.test"
    daemon.cli("alias", "delete", "info@cli.test")
    key = json.loads(daemon.cli("key", "create", "--mailbox", "carol@cli.test", "--json").stdout)
    listed = json.loads(daemon.cli("key", "list", "--json").stdout)
    assert key["id"] in {k["id"] for k in listed} and all("key" not in k for k in listed)
    daemon.cli("key", "revoke", key["id"])
    with daemon.http(key["key"]) as client:
        assert client.get("/v1/mailboxes/carol@cli.test").status_code == 403
    status = json.loads(daemon.cli("status", "--json").stdout)
    assert status["running"] is True and status["mailboxes"] == 1 and status["domains"] == ["cli.test"]
    daemon.cli("mailbox", "delete", "carol@cli.test", "--yes")
    assert json.loads(daemon.cli("mailbox", "list", "--json").stdout) == []


def test_unknown_toml_key_is_an_error_naming_it(tmp_path):
    config = tmp_path / "openmailserver.toml"
    config.write_text('data_dir = "x"\nsmtp_prot = 25\n')
    result = subprocess.run([sys.executable, "-m", "openmailserver", "config", "show", "--config", str(config)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "smtp_prot" in result.stderr


def test_serve_refuses_a_second_daemon_on_the_same_data_dir(daemon):
    again = subprocess.run([sys.executable, "-m", "openmailserver", "serve"], env=daemon.env,
                           capture_output=True, text=True, timeout=30)
    assert again.returncode == 1 and "already serves" in again.stderr
    assert daemon.proc.poll() is None
    daemon.proc.send_signal(signal.SIGINT)
    assert daemon.proc.wait(timeout=10) == 0

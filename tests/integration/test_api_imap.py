"""The HTTP API and IMAP see each other's changes at once."""

from __future__ import annotations

import imaplib

from support.mail import build_message, send, wait_for

PASSWORD = "alice-password-1"


def _imap(daemon) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", daemon.settings["imap_port"])
    client.login("alice@a.test", PASSWORD)
    return client


def _flags(client: imaplib.IMAP4, folder: str) -> list[str]:
    client.select(folder)
    status, data = client.uid("FETCH", "1:*", "(FLAGS)")
    assert status == "OK"
    return [item.decode() for item in data if item]


def test_smtp_message_read_flagged_moved_deleted_through_the_api_and_seen_by_imap(make_daemon, dns_server):
    b = make_daemon("b", dns_nameservers=[dns_server.address])
    b.create_mailbox("bob")
    a = make_daemon("a", dns_nameservers=[dns_server.address], remote_smtp_port=b.smtp_port)
    dns_server.add("b.test", "MX", "10 mx.b.test")
    dns_server.add("mx.b.test", "A", "127.0.0.1")
    key = a.create_mailbox("alice", password=PASSWORD)["api_key"]["key"]
    send(a.smtp_port, "x@remote.test", ["alice@a.test"], build_message("x@remote.test", "alice@a.test", "hello"))
    imap = _imap(a)
    watcher = _imap(a)  # a second session holding INBOX open
    watcher.select("INBOX")
    with a.http(key) as client:
        [listed] = client.get("/v1/mailboxes/alice@a.test/messages").json()
        assert client.get(f"/v1/messages/{listed['id']}").json()["body"].strip() == "hi there"
        patched = client.patch(f"/v1/messages/{listed['id']}", json={"seen": True, "flagged": True,
                                                                      "add_labels": ["invoice"]}).json()
        assert set(patched["flags"]) >= {"\\Seen", "\\Flagged", "invoice"} and patched["labels"] == ["invoice"]
        by_label = lambda label: [m["id"] for m in client.get("/v1/mailboxes/alice@a.test/messages",
                                                              params={"label": label}).json()]
        assert by_label("invoice") == by_label("inbound") == [listed["id"]]
        assert by_label("unread") == [] and by_label("outbound") == [] and by_label("other") == []
        [fetched] = _flags(imap, "INBOX")
        assert "\\Seen" in fetched and "\\Flagged" in fetched and "invoice" in fetched
        watcher.noop()  # the other session hears of the change (RFC 3501 §7.4.2 untagged FETCH)
        assert any(b"\\Seen" in line for line in watcher.untagged_responses.pop("FETCH", [])), \
            watcher.untagged_responses
        # IMAP changes a flag: the API sees it.
        imap.select("INBOX")
        imap.uid("STORE", "1", "+FLAGS", "(\\Answered)")
        assert "\\Answered" in client.get(f"/v1/messages/{listed['id']}").json()["flags"]
        # A move through the API: gone from INBOX, present in Archive, for IMAP too.
        assert client.patch(f"/v1/messages/{listed['id']}", json={"folder": "Archive"}).json()["folder"] == "Archive"
        watcher.noop()
        assert watcher.untagged_responses.pop("EXPUNGE", None) == [b"1"]
        imap.select("INBOX")
        assert imap.uid("SEARCH", "ALL")[1] == [b""]
        [archived] = _flags(imap, "Archive")
        assert "\\Answered" in archived and "invoice" in archived
        assert client.patch(f"/v1/messages/{listed['id']}", json={"folder": "Nowhere"}).status_code == 422
        assert client.patch(f"/v1/messages/{listed['id']}", json={"add_flags": ["\\Recent"]}).status_code == 422
        # Delete: first to Trash, then for good.
        trashed = client.delete(f"/v1/messages/{listed['id']}")
        assert trashed.json().get("result") == "moved_to_trash", trashed.text
        assert len(_flags(imap, "Trash")) == 1
        assert client.delete(f"/v1/messages/{listed['id']}").json()["result"] == "deleted"
        imap.select("Trash")
        assert imap.uid("SEARCH", "ALL")[1] == [b""]
        assert client.get(f"/v1/messages/{listed['id']}").status_code == 404
        # Sent through the API: arrives at B, and IMAP shows the copy in Sent.
        sent = client.post("/v1/mail/send", json={"sender": "alice@a.test", "recipients": ["bob@b.test"],
                                                  "subject": "via api", "text_body": "over smtp"})
        assert sent.status_code == 200
    wait_for(lambda: b.messages_on_disk("bob@b.test"))
    imap.select("Sent")
    status, data = imap.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"via api" in data[0][1]
    imap.logout()
    watcher.logout()

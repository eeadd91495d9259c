"""Attachments for agents: metadata, download, and extracted text (text, CSV, HTML, PDF)."""

from __future__ import annotations

import base64

from support.pdf import pdf_with_text


def test_attachment_text_and_download(make_daemon):
    daemon = make_daemon("att")
    agent = daemon.create_mailbox("agent")
    files = {
        "notes.txt": ("text/plain", b"plain notes\r\nline two"),
        "data.csv": ("text/csv", b"name,total\nalice,42\n"),
        "page.html": ("text/html", b"<h1>Invoice</h1><p>Total: <b>89.99</b></p><script>x()</script>"),
        "receipt.pdf": ("application/pdf", pdf_with_text("Order confirmation 1042")),
        "image.png": ("image/png", b"\x89PNG\r\n\x1a\nnot really"),
    }
    with daemon.http(agent["api_key"]["key"]) as client:
        sent = client.post("/v1/mail/send", json={
            "sender": "agent@att.test", "recipients": ["agent@att.test"], "subject": "files",
            "html_body": "<p>Hello <i>agent</i></p>",
            "attachments": [{"filename": n, "content_type": t, "content": base64.b64encode(d).decode()}
                            for n, (t, d) in files.items()]})
        assert sent.status_code == 200, sent.text
        [row] = client.get("/v1/mailboxes/agent@att.test/messages").json()
        message = client.get(f"/v1/messages/{row['id']}").json()
        assert message["text"].strip() == "Hello agent"  # HTML converted when there is no text part
        by_name = {a["filename"]: a for a in message["attachments"]}
        assert set(by_name) == set(files)
        assert by_name["notes.txt"]["parsed_text"] == "plain notes\nline two"
        assert by_name["data.csv"]["extraction_method"] == "csv" and "alice,42" in by_name["data.csv"]["parsed_text"]
        assert "Total: 89.99" in by_name["page.html"]["parsed_text"] and "x()" not in by_name["page.html"]["parsed_text"]
        assert by_name["receipt.pdf"]["extraction_method"] == "pdf"
        assert "Order confirmation 1042" in by_name["receipt.pdf"]["parsed_text"]
        assert by_name["image.png"]["parsed_text"] is None and by_name["image.png"]["extraction_method"] == "unsupported"
        assert message["attachment_limits"]["parse_max_bytes"] > 0
        pdf = client.get(by_name["receipt.pdf"]["url"])
        assert pdf.status_code == 200 and pdf.content == files["receipt.pdf"][1]
        assert pdf.headers["content-type"] == "application/pdf" and "receipt.pdf" in pdf.headers["content-disposition"]
        assert client.get(f"/v1/messages/{row['id']}/attachments/99").status_code == 404
        assert client.get(f"/v1/messages/{row['id']}/attachments/x").status_code == 422
        events = client.get("/v1/events", params={"types": "message.received"}).json()["events"]
        [pdf_meta] = [a for a in events[0]["message"]["attachments"] if a["filename"] == "receipt.pdf"]
        assert pdf_meta["contentType"] == "application/pdf" and "1042" in pdf_meta["parsedText"]
        assert pdf_meta["extractionMethod"] == "pdf" and pdf_meta["sizeBytes"] == len(files["receipt.pdf"][1])
    other = daemon.create_mailbox("other")
    with daemon.http(other["api_key"]["key"]) as client:
        assert client.get(f"/v1/messages/{row['id']}/attachments/0").status_code == 404

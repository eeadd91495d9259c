"""Operations endpoints: Prometheus metrics that move with the mail, and client autoconfiguration."""

from __future__ import annotations

import smtplib
import xml.etree.ElementTree as ET

import httpx
from prometheus_client.parser import text_string_to_metric_families

from support.mail import build_message, insecure_tls, send, wait_for


def _samples(daemon) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"{daemon.api_url}/metrics").text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_parse_and_move_with_mail(make_daemon):
    daemon = make_daemon("m", retry_schedule="1s")
    agent = daemon.create_mailbox("agent", password="agent-password")
    before = _samples(daemon)
    send(daemon.smtp_port, "x@remote.test", ["agent@m.test"], build_message("x@remote.test", "agent@m.test", "in"))
    with daemon.http(agent["api_key"]["key"]) as client:
        assert client.post("/v1/mail/send", json={"sender": "agent@m.test", "recipients": ["x@nowhere.test"],
                                                  "subject": "out", "text_body": "x"}).status_code == 200
    with smtplib.SMTP_SSL("127.0.0.1", daemon.settings["submission_port"], context=insecure_tls()) as client:
        try:
            client.login("agent@m.test", "wrong-password")
        except smtplib.SMTPAuthenticationError:
            pass
    after = wait_for(lambda: (s := _samples(daemon)) and _value(s, "openmailserver_deliveries_total",
                                                                outcome="bounced") >= 1 and s, timeout=10)
    assert _value(after, "openmailserver_messages_received_total") - _value(
        before, "openmailserver_messages_received_total") == 1
    assert _value(after, "openmailserver_messages_sent_total", via="api") == 1
    assert _value(after, "openmailserver_auth_failures_total", protocol="smtp") >= 1
    assert _value(after, "openmailserver_api_request_seconds_count", method="POST", route="/v1/mail/send",
                  status="200") == 1
    assert _value(after, "openmailserver_queue_depth") == 0
    with smtplib.SMTP("127.0.0.1", daemon.smtp_port) as held_open:
        held_open.ehlo()
        assert _value(_samples(daemon), "openmailserver_sessions", listener="smtp") == 1


def test_thunderbird_autoconfig_and_autodiscover(make_daemon):
    daemon = make_daemon("ac")
    for path in ("/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml"):
        response = httpx.get(f"{daemon.api_url}{path}", params={"emailaddress": "someone@ac.test"})
        assert response.status_code == 200 and "xml" in response.headers["content-type"]
        root = ET.fromstring(response.content)
        assert root.tag == "clientConfig" and root.get("version") == "1.1"
        provider = root.find("emailProvider")
        assert provider.get("id") == "ac.test" and provider.findtext("domain") == "ac.test"
        incoming, outgoing = provider.find("incomingServer"), provider.find("outgoingServer")
        assert incoming.get("type") == "imap" and outgoing.get("type") == "smtp"
        assert incoming.findtext("hostname") == outgoing.findtext("hostname") == "mx.ac.test"
        assert incoming.findtext("port") == str(daemon.settings["imaps_port"])
        assert outgoing.findtext("port") == str(daemon.settings["submission_port"])
        assert incoming.findtext("socketType") == outgoing.findtext("socketType") == "SSL"
        assert incoming.findtext("username") == "%EMAILADDRESS%"
    request = ('<?xml version="1.0"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/'
               'outlook/requestschema/2006"><Request><EMailAddress>someone@ac.test</EMailAddress>'
               '<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/'
               'responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>')
    response = httpx.post(f"{daemon.api_url}/autodiscover/autodiscover.xml", content=request)
    ns = {"o": "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"}
    protocols = ET.fromstring(response.content).findall(".//o:Protocol", ns)
    by_type = {p.findtext("o:Type", namespaces=ns): p for p in protocols}
    assert by_type["IMAP"].findtext("o:Port", namespaces=ns) == str(daemon.settings["imaps_port"])
    assert by_type["SMTP"].findtext("o:Port", namespaces=ns) == str(daemon.settings["submission_port"])
    assert by_type["IMAP"].findtext("o:LoginName", namespaces=ns) == "someone@ac.test"
    assert by_type["SMTP"].findtext("o:Server", namespaces=ns) == "mx.ac.test"

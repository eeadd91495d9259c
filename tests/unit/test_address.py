"""Address validation: what may become a path, and what an envelope may hold."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openmailserver.address import (
    mailbox_address,
    normalise_domain,
    parse_address,
    parse_mailbox_address,
    split_subaddress,
)
from openmailserver.errors import MailError
from openmailserver.store.maildir import mailbox_root


@pytest.mark.parametrize("text,expected", [
    ("User@Example.COM", ("User", "example.com")),
    ("<a.b+tag@example.org>", ("a.b+tag", "example.org")),
    ("jörg@bücher.example", ("jörg", "xn--bcher-kva.example")),
    ("x@localhost", ("x", "localhost")),
])
def test_valid_addresses(text, expected):
    address = parse_address(text)
    assert (address.local, address.domain) == expected


@pytest.mark.parametrize("text", [
    "", "no-at-sign", "@example.com", "a@", "a..b@example.com", ".a@example.com", "a.@example.com",
    "a b@example.com", '"quoted"@example.com', "a@-example.com", "a@example..com", "a@exa_mple.com",
    "a@[127.0.0.1]", "a@123", "a" * 65 + "@example.com", "a@" + "b" * 64 + ".com", "a\x00b@example.com",
    "a@" + ".".join(["abcdefghij"] * 25) + ".com",
])
def test_invalid_addresses(text):
    with pytest.raises(MailError) as info:
        parse_address(text)
    assert info.value.http_status == 422 and info.value.code.smtp_code == 501


@pytest.mark.parametrize("local", ["../x", "a/b", "a+b", "..", ".", "x\\y", "a\nb", "é/"])
def test_mailbox_local_parts_are_path_safe(local):
    with pytest.raises(MailError):
        mailbox_address(local, "example.com")


def test_mailbox_addresses_are_lower_case():
    assert str(parse_mailbox_address("Agent.Smith@Example.com")) == "agent.smith@example.com"
    assert split_subaddress("user+tag+more") == ("user", "tag+more")
    assert split_subaddress("+tag") == ("+tag", None)


def test_idna_domains():
    assert normalise_domain("ÉXAMPLE.test") == "xn--xample-9ua.test"


@settings(deadline=None)  # a pure check; a busy machine must not fail it on time alone
@given(st.text(min_size=1, max_size=80), st.sampled_from(["example.com", "ex-ample.org"]))
def test_any_accepted_mailbox_stays_inside_the_mail_root(tmp_path_factory, local, domain):
    root = tmp_path_factory.getbasetemp() / "mail"
    try:
        address = mailbox_address(local, domain)
    except MailError:
        return
    path = mailbox_root(root, address.domain, address.local)
    assert path.parent.parent == root and "/" not in address.local and address.local not in (".", "..")

"""Passwords and API keys (`auth.credentials`)."""

from __future__ import annotations

import time

from openmailserver.auth import credentials


def test_the_dummy_hash_has_the_parameters_of_a_new_hash():
    # A login for an unknown address verifies against DUMMY_HASH so that it takes as long as
    # one for a real mailbox: its argon2 parameters must be those hash_password uses now.
    assert not credentials._hasher.needs_update(credentials.DUMMY_HASH)
    assert credentials.DUMMY_HASH.split("$")[1:4] == credentials.hash_password("x").split("$")[1:4]
    assert not credentials.verify_password("not a real password, surely", credentials.DUMMY_HASH)


def test_an_unknown_password_costs_what_a_known_one_does():
    real = credentials.hash_password("right")

    def cost(password_hash: str) -> float:
        started = time.perf_counter()
        for _ in range(3):
            credentials.verify_password("wrong", password_hash)
        return time.perf_counter() - started

    dummy, known = cost(credentials.DUMMY_HASH), cost(real)
    assert 0.5 < dummy / known < 2.0, (dummy, known)


def test_api_keys_are_redacted_to_their_visible_prefix():
    key = credentials.new_api_key()
    assert credentials.KEY_PATTERN.fullmatch(key)
    text = credentials.redact_keys(f"header X-OpenMailserver-Key: {key} sent")
    assert key not in text and credentials.visible_prefix(key) + "…" in text

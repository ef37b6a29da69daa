"""Signed ticket tokens: what we sign verifies, anything else names no ticket."""
import pytest

from shared import mail_tokens as t
from shared.config import ConfigError

SECRET = b"a-test-secret-of-enough-length"
OTHER = b"another-secret-of-enough-length"


def test_our_message_id_names_its_ticket():
    mid = t.message_id(SECRET, "TM-10001", "n1", "ticketmesh.test")
    assert mid.startswith("<tm.TM-10001.n1.") and mid.endswith("@ticketmesh.test>")
    assert t.ticket_from_message_id(SECRET, mid) == "TM-10001"
    assert t.ticket_from_message_id(SECRET, mid.strip("<>")) == "TM-10001"  # as parsed from a header


def test_our_plus_address_names_its_ticket():
    address = t.reply_address(SECRET, "TM-10001", "support@ticketmesh.test")
    assert address.startswith("support+TM-10001.") and address.endswith("@ticketmesh.test")
    assert t.ticket_from_address(SECRET, address) == "TM-10001"
    # an address that already has a plus part is not nested
    assert t.reply_address(SECRET, "TM-7", "support+old@x.test").startswith("support+TM-7.")


def test_clients_and_mtas_that_change_case_do_not_break_the_match():
    mid = t.message_id(SECRET, "TM-10001", "n1", "ticketmesh.test")
    address = t.reply_address(SECRET, "TM-10001", "support@ticketmesh.test")
    assert t.ticket_from_message_id(SECRET, mid.upper()) == "TM-10001"
    assert t.ticket_from_message_id(SECRET, mid.lower()) == "TM-10001"
    assert t.ticket_from_address(SECRET, address.lower()) == "TM-10001"
    assert t.ticket_from_address(SECRET, address.upper()) == "TM-10001"


def _tampered(value: str) -> str:
    sig = t.signature(SECRET, "TM-10001")
    return value.replace(sig, sig[:-1] + ("b" if sig[-1] != "b" else "c"))


@pytest.mark.parametrize("forged", [
    lambda: _tampered(t.message_id(SECRET, "TM-10001", "n1", "x.test")),  # tampered signature
    lambda: t.message_id(SECRET, "TM-10001", "n1", "x.test").replace("TM-10001", "TM-10002"),  # other ticket
    lambda: t.message_id(OTHER, "TM-10001", "n1", "x.test"),  # signed with another key
    lambda: "<tm.TM-10001.n1@x.test>",  # the old unsigned shape
    lambda: "<CAF+abc123@mail.gmail.com>",
    lambda: "",
])
def test_forged_or_foreign_message_ids_name_nothing(forged):
    assert t.ticket_from_message_id(SECRET, forged()) is None


@pytest.mark.parametrize("forged", [
    lambda: _tampered(t.reply_address(SECRET, "TM-10001", "support@x.test")),
    lambda: t.reply_address(SECRET, "TM-10001", "support@x.test").replace("TM-10001", "TM-10002"),
    lambda: t.reply_address(OTHER, "TM-10001", "support@x.test"),
    lambda: "support+TM-10001@x.test",
    lambda: "support@x.test",
])
def test_forged_or_foreign_plus_addresses_name_nothing(forged):
    assert t.ticket_from_address(SECRET, forged()) is None


def test_subject_tag_is_read_but_unsigned():
    assert t.ticket_from_subject("Re: [#TM-10001] 我们已收到您的请求") == "TM-10001"
    assert t.ticket_from_subject("re: [#tm-10001] hello") == "TM-10001"
    assert t.ticket_from_subject("TM-10001 without brackets") is None


def test_secret_from_env():
    assert t.secret_from_env({}) == (t.DEV_SECRET.encode(), True)
    assert t.secret_from_env({t.SECRET_VARIABLE: "x" * 16}) == (b"x" * 16, False)
    with pytest.raises(ConfigError, match=t.SECRET_VARIABLE):
        t.secret_from_env({t.SECRET_VARIABLE: "short"})


def test_secret_from_env_reads_only_the_mapping_it_is_given(monkeypatch):
    # A pure module: the process environment is the config module's to read, never this one's.
    monkeypatch.setenv(t.SECRET_VARIABLE, "y" * 20)
    assert t.secret_from_env({}) == (t.DEV_SECRET.encode(), True)
    with pytest.raises(TypeError):
        t.secret_from_env()  # type: ignore[call-arg]

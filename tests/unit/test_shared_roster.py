import pytest

from shared.roster import RosterError, hash_password, load_roster, verify_password


def test_password_hash_verifies_only_the_right_password():
    encoded = hash_password("demo-lina", salt=b"0" * 16)
    assert verify_password("demo-lina", encoded)
    assert not verify_password("demo-linA", encoded)
    assert not verify_password("x", "not-a-hash")


def test_demo_roster_loads_and_demo_logins_match():
    roster = load_roster("deploy/demo/roster.yaml").by_id()
    assert verify_password("demo-lina", roster["li.na"].password_hash)
    assert roster["wang.fang"].role == "supervisor"


def test_plain_password_and_bad_proficiency_are_refused_with_the_place(tmp_path):
    path = tmp_path / "roster.yaml"
    path.write_text("agents:\n  - {agent_id: a1, name: A, password_hash: secret}\n")
    with pytest.raises(RosterError, match="agents.0.password_hash: .*scrypt hash"):
        load_roster(path)
    path.write_text(f"agents:\n  - {{agent_id: a1, name: A, password_hash: '{hash_password('x' * 8)}', skills: {{billing: 7}}}}\n")
    with pytest.raises(RosterError, match="proficiency of 'billing' must be 1-5"):
        load_roster(path)


def test_display_names_come_from_the_roster_and_an_unreadable_one_yields_none(tmp_path):
    from shared.roster import display_names

    assert display_names("deploy/demo/roster.yaml")["li.na"] == "李娜"
    assert display_names(tmp_path / "missing.yaml") == {}

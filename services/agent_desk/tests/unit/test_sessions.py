from datetime import datetime, timedelta, timezone

from services.agent_desk.sessions import Session, sign_session, verify_session

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)
SESSION = Session(agent_id="li.na", session_id="s1", issued_at=T0)


def test_signed_session_round_trips():
    cookie = sign_session(SESSION, "k1")
    assert verify_session(cookie, "k1", now=T0 + timedelta(hours=1), max_age_seconds=12 * 3600) == SESSION


def test_other_key_or_edited_payload_is_refused():
    cookie = sign_session(SESSION, "k1")
    assert verify_session(cookie, "k2", now=T0, max_age_seconds=3600) is None
    forged_payload = sign_session(Session("wang.fang", "s1", T0), "attacker").split(".")[0]
    assert verify_session(f"{forged_payload}.{cookie.split('.')[1]}", "k1", now=T0, max_age_seconds=3600) is None


def test_expired_or_from_the_future_is_refused():
    cookie = sign_session(SESSION, "k1")
    assert verify_session(cookie, "k1", now=T0 + timedelta(hours=13), max_age_seconds=12 * 3600) is None
    assert verify_session(cookie, "k1", now=T0 - timedelta(hours=1), max_age_seconds=12 * 3600) is None


def test_garbage_is_refused_without_raising():
    for junk in (None, "", "abc", "a.b.c", "ÿ.ÿ", "x" * 5000, "e30.", ".sig"):
        assert verify_session(junk, "k1", now=T0, max_age_seconds=3600) is None

"""Pure parts of the chat: identities, the queue estimate, addresses and limits, uploads, config."""
import hashlib
import hmac
from datetime import datetime, timedelta, timezone

import pytest

from services.intake_chat import abuse, conversation, identity, queue_eta, uploads
from services.intake_chat.config import RateLimit, Settings, parse_rate_limits
from services.intake_chat.validation import InvalidInput, Profile, claimed_identity, since, upload_ids
from shared.config import ConfigError

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=timezone.utc)
SECRET = b"shop-secret-0123456789"
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360000002"
                    "0001e221bc330000000049454e44ae426082")


# --- identity ---------------------------------------------------------------------------------

def test_anonymous_visitor_id_is_a_hash_of_the_session_secret_not_the_secret():
    one = identity.anonymous("v_0123456789abcdef0123")
    assert one.visitor_id.startswith("v_") and len(one.visitor_id) == 34 and not one.verified
    assert "0123456789abcdef0123" not in one.visitor_id
    assert identity.anonymous("v_0123456789abcdef0123") == one
    # knowing a visitor's id and sending it as a session opens another visitor, not theirs
    assert identity.anonymous(one.visitor_id).visitor_id != one.visitor_id


def test_verified_user_gets_a_stable_id_per_site_and_user():
    good = hmac.new(SECRET, "user-42".encode(), hashlib.sha256).hexdigest()
    assert identity.user_hash(SECRET, "user-42") == good
    who = identity.verify({"shop": SECRET}, "shop", "user-42", good.upper())
    assert who.verified and who.visitor_id == identity.verified_visitor_id("shop", "user-42")
    assert who.visitor_id.startswith("u_") and who.visitor_id != identity.verified_visitor_id("other", "user-42")


@pytest.mark.parametrize("site, user, code", [("shop", "user-43", "identity_not_verified"),
                                              ("nowhere", "user-42", "unknown_site")])
def test_a_wrong_hash_or_site_is_refused(site, user, code):
    with pytest.raises(identity.IdentityRefused) as info:
        identity.verify({"shop": SECRET}, site, user, identity.user_hash(SECRET, "user-42"))
    assert info.value.code == code


@pytest.mark.parametrize("data, code", [
    ({"user_id": "u1", "user_hash": "ab" * 32}, "invalid_site"),
    ({"site": "shop", "user_id": "", "user_hash": "ab" * 32}, "invalid_user_id"),
    ({"site": "shop", "user_id": "u\x00", "user_hash": "ab" * 32}, "invalid_user_id"),
    ({"site": "shop", "user_id": "u1", "user_hash": "zz"}, "invalid_user_hash"),
])
def test_claimed_identity_fields_are_checked(data, code):
    with pytest.raises(InvalidInput) as info:
        claimed_identity(data)
    assert info.value.code == code


def test_no_claimed_identity_without_user_fields():
    assert claimed_identity({"session": "x" * 20, "site": "shop"}) is None


# --- queue estimate ---------------------------------------------------------------------------

SEATS = queue_eta.Seats(agents_online=2, seats=6, free=0)


def status(**over):
    args = dict(routing_state="queued", position=4, agent_id=None, seats=SEATS,
                respond_by=NOW + timedelta(minutes=10), now=NOW, handle_seconds=300)
    args.update(over)
    return queue_eta.queue_status(**args)


def test_wait_is_place_times_handle_time_over_seats_in_whole_minutes():
    s = status()
    assert (s.state, s.position, s.expected_wait_seconds, s.at_risk) == ("waiting", 4, 240, False)  # 4×300/6 = 200 s


def test_a_wait_beyond_the_first_response_target_is_shown_honestly_and_flagged():
    s = status(position=30)  # 30×300/6 = 1500 s > 600 s left
    assert s.expected_wait_seconds == 1500 and s.at_risk


def test_first_in_line_with_a_free_seat_waits_no_time():
    assert status(position=1, seats=queue_eta.Seats(1, 3, 1)).expected_wait_seconds == 0


def test_no_agents_online_says_so():
    s = status(seats=queue_eta.Seats(0, 0, 0))
    assert s.state == "no_agents" and s.expected_wait_seconds is None


def test_before_routing_the_sla_target_is_the_wait():
    s = status(routing_state=None, position=None)
    assert s.state == "pending" and s.expected_wait_seconds == 600


def test_assigned_names_the_agent_in_the_frame():
    s = status(routing_state="assigned", agent_id="li.na", position=None)
    assert s.frame("李娜") == {"type": "queue", "state": "assigned", "position": None, "expected_wait_seconds": 0,
                              "respond_by": (NOW + timedelta(minutes=10)).isoformat(), "at_risk": False,
                              "agents_online": 2, "agent_name": "李娜"}


# --- addresses and limits ---------------------------------------------------------------------

def test_forwarded_for_is_believed_only_from_a_trusted_proxy():
    proxies = Settings.from_env({"TM_CHAT_TRUSTED_PROXIES": "10.0.0.0/8"}).trusted_proxies
    assert abuse.client_address("10.1.2.3", "198.51.100.7, 10.0.0.9", proxies) == "198.51.100.7"
    assert abuse.client_address("203.0.113.5", "198.51.100.7", proxies) == "203.0.113.5"
    assert abuse.client_address(None, None, proxies) == "unknown"


def test_blocked_networks_match_addresses_of_their_family_only():
    blocked = Settings.from_env({"TM_CHAT_BLOCKED_IPS": "192.0.2.0/24, 2001:db8::/32"}).blocked_networks
    assert abuse.is_blocked("192.0.2.77", blocked) and abuse.is_blocked("2001:db8::1", blocked)
    assert not abuse.is_blocked("192.0.3.1", blocked) and not abuse.is_blocked("unknown", blocked)


def test_rate_limits_override_the_defaults_by_name():
    limits = parse_rate_limits("session_messages=5/10, ip_connects=0/60")
    assert limits["session_messages"] == RateLimit(5, 10) and limits["ip_connects"] == RateLimit(0, 60)
    assert limits["ip_conversations"] == RateLimit(60, 3600)


@pytest.mark.parametrize("name, value", [("TM_CHAT_RATE_LIMITS", "bogus=1/1"), ("TM_CHAT_RATE_LIMITS", "ip_messages=x"),
                                         ("TM_CHAT_IDENTITY_SECRETS", "shop=short"), ("TM_CHAT_BLOCKED_IPS", "nope"),
                                         ("TM_CHAT_UPLOAD_MAX_BYTES", "0")])
def test_bad_settings_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


# --- uploads ----------------------------------------------------------------------------------

ALLOWED = ("image/png", "application/pdf")


def test_type_comes_from_the_bytes_and_the_name_loses_its_path():
    sniffed = uploads.sniff(PNG, "../../etc/截图.png", allowed_types=ALLOWED, max_bytes=1000)
    assert (sniffed.content_type, sniffed.filename, sniffed.size) == ("image/png", "截图.png", len(PNG))
    assert sniffed.sha256 == hashlib.sha256(PNG).hexdigest()


@pytest.mark.parametrize("data, code", [(b"<script>alert(1)</script>", "file_type_not_allowed"),
                                        (b"", "empty_file"), (PNG + b"\0" * 1000, "file_too_large")])
def test_refused_uploads(data, code):
    with pytest.raises(uploads.UploadRefused) as info:
        uploads.sniff(data, "photo.png", allowed_types=ALLOWED, max_bytes=1000)
    assert info.value.code == code


# --- frames and transcripts -------------------------------------------------------------------

@pytest.mark.parametrize("value", [-1, "3", 1.5, True, 2**40])
def test_since_is_a_non_negative_integer(value):
    with pytest.raises(InvalidInput):
        since(value)


def test_upload_ids_are_a_short_list_without_repeats():
    assert upload_ids(["f_1", "f_1", "f_2"]) == ("f_1", "f_2")
    with pytest.raises(InvalidInput):
        upload_ids(["f"] * 6)
    with pytest.raises(InvalidInput):
        upload_ids("f_1")


def entries():
    return [{"seq": 1, "from": "customer", "client_message_id": "m-1", "text": "hi", "sent_at": NOW.isoformat()},
            {"seq": 2, "from": "agent", "reply_id": "r-1", "agent_id": "li.na", "agent_name": "李娜", "text": "hello",
             "sent_at": NOW.isoformat()},
            {"seq": 3, "from": "agent", "reply_id": "r-2", "agent_id": "li.na", "agent_name": "李娜", "text": "still?",
             "sent_at": NOW.isoformat()}]


def test_unreceived_replies_are_the_agent_lines_after_what_was_confirmed():
    assert [e["reply_id"] for e in conversation.unreceived_replies(entries(), after=2, up_to=3)] == ["r-2"]
    assert conversation.unreceived_replies(entries(), after=3, up_to=3) == []


def test_missed_event_id_is_stable_per_ticket_and_position():
    kwargs = dict(ticket_id="TM-1", trace_id="t", visitor_id="v_x", profile=Profile(name="Ann", email="a@example.com"),
                  subject="s", replies=entries()[1:], now=NOW)
    one, two = conversation.reply_missed_event(**kwargs), conversation.reply_missed_event(**kwargs)
    assert one["event_id"] == two["event_id"] and one["up_to_seq"] == 3 and one["to"] == "a@example.com"
    assert [r["name"] for r in one["replies"]] == ["李娜", "李娜"]


def test_history_hides_agent_ids_from_the_widget():
    assert "agent_id" not in conversation.history_entry(entries()[1])

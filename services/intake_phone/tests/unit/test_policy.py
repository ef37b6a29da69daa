import pytest

from services.intake_phone.policy import PhonePolicyError, load_policy, parse_policy, parse_policy_text
from services.intake_phone.tests.conftest import SHIPPED_POLICY, TEST_POLICY


def policy(data=TEST_POLICY, region="CN"):
    return parse_policy(data, default_region=region, origin="phone policy test.yaml")


def test_the_shipped_file_is_valid_and_says_what_the_issue_asks():
    shipped = load_policy(SHIPPED_POLICY, default_region="CN")
    assert (shipped.default.missed, shipped.default.voicemail, shipped.default.answered) == ("callback", "ticket", "wrap_up")
    assert shipped.default.fold_window_seconds == 30 * 60
    hotline = shipped.line_for(to_number="+864008001234")
    assert hotline.name == "hotline" and shipped.line_for(queue="VIP").fold_window_seconds == 120 * 60
    assert shipped.wrap_up_outcome("Resolved") == ("resolved", True)
    assert shipped.cdr_timezone == "Asia/Shanghai" and "from-trunk" in shipped.inbound_contexts


def test_an_empty_file_means_every_default():
    empty = parse_policy(None, default_region="CN")
    assert empty.lines == () and empty.default.missed == "callback" and empty.wrap_up_outcome("x") == ("open", False)


def test_line_by_queue_then_dialled_number_then_cdr_context_then_default():
    p = policy()
    assert p.line_for(queue=" Sales ", to_number="+864008001234").name == "sales-line"  # the queue is more specific
    assert p.line_for(to_number="+864008001234").name == "hotline"
    assert p.line_for(context="from-hotline").name == "hotline"
    assert p.line_for(queue="other", to_number="+8613800000000").name == "default"


def test_line_keys_left_out_come_from_defaults():
    p = policy()
    sales = p.line_for(queue="sales")
    assert (sales.missed, sales.voicemail, sales.fold_window_seconds) == ("callback", "ticket", 30 * 60)
    assert p.line_for(to_number="+864008001234").fold_window_seconds == 0


def test_wrap_up_codes_are_case_insensitive_and_unknown_ones_follow_the_file():
    p = policy()
    assert p.wrap_up_outcome(" RESOLVED ") == ("resolved", True)
    assert p.wrap_up_outcome("已解决") == ("resolved", True)
    assert p.wrap_up_outcome("Follow_Up") == ("open", True)
    assert p.wrap_up_outcome("") == ("open", False)
    lenient = policy({**TEST_POLICY, "wrap_up_codes": {"resolved": "done", "unknown": "resolved"}})
    assert lenient.wrap_up_outcome("whatever") == ("resolved", False)


def test_cdr_rows_are_inbound_by_context_or_a_lines_number():
    p = policy()
    assert p.cdr_is_inbound(context="from-trunk", to_number="")
    assert p.cdr_is_inbound(context="from-hotline", to_number="")
    assert p.cdr_is_inbound(context="from-internal", to_number="+864008001234")
    assert not p.cdr_is_inbound(context="from-internal", to_number="+8613800000000")


@pytest.mark.parametrize("data, message", [
    ([1, 2], "phone policy test.yaml: expected a mapping (defaults, lines, wrap_up_codes, cdr), got list"),
    ({"lines": [{"name": "a", "numbers": ["12-34"]}]},
     "phone policy test.yaml: line 1 'a': numbers: '12-34': not a valid phone number"),
    ({"lines": [{"name": "a"}, {"name": "vip", "missed": "call"}]},
     "phone policy test.yaml: line 2 'vip': missed: Input should be 'callback' or 'ignore'"),
    ({"lines": [{"name": "a", "fold_window_minutes": -5}]},
     "phone policy test.yaml: line 1 'a': fold_window_minutes: Input should be greater than or equal to 0"),
    ({"lines": [{"name": "a", "queue": "x"}]}, "phone policy test.yaml: line 1 'a': queue: Extra inputs are not permitted"),
    ({"lines": [{"name": "a", "queues": ["Q"]}, {"name": "b", "queues": ["q"]}]},
     "phone policy test.yaml: line 2 'b': queue 'q' already belongs to line 'a'"),
    ({"lines": [{"name": "a", "numbers": ["4008001234"]}, {"name": "b", "numbers": ["+86 400 800 1234"]}]},
     "phone policy test.yaml: line 2 'b': number '+864008001234' already belongs to line 'a'"),
    ({"lines": [{"name": "a"}, {"name": "a"}]}, "line names must be unique (and not 'default'), repeated: a"),
    ({"lines": [{"name": "default"}]}, "repeated: default"),
    ({"lines": [{"numbers": ["4008001234"]}]}, "phone policy test.yaml: line 1: name: Field required"),
    ({"defaults": {"voicemail": "mail"}}, "phone policy test.yaml: defaults.voicemail: Input should be 'ticket' or 'ignore'"),
    ({"wrap_up_codes": {"resolved": ["x"], "open": ["X"]}}, "wrap_up_codes: x cannot be both resolved and open"),
    ({"cdr": {"timezone": "Mars/Olympus"}}, "cdr.timezone: Value error, 'Mars/Olympus' is not a time zone name"),
    ({"lines": "hotline"}, "phone policy test.yaml: lines: Input should be a valid list"),
])
def test_errors_name_the_file_the_line_and_the_field(data, message):
    with pytest.raises(PhonePolicyError) as info:
        policy(data)
    assert message in str(info.value)


def test_yaml_syntax_errors_and_missing_files_name_the_file(tmp_path):
    with pytest.raises(PhonePolicyError, match=r"^phone policy x.yaml is not valid YAML"):
        parse_policy_text("lines: [", default_region="CN", origin="phone policy x.yaml")
    with pytest.raises(PhonePolicyError, match=r"cannot read phone policy .*missing.yaml"):
        load_policy(tmp_path / "missing.yaml", default_region="CN")

"""The notify config (robots from environment variables only) and each vendor's request shape,
signing and answers. Signatures are checked here by recomputing what each vendor documents,
not by calling the module's own signing functions."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from services.notifier import webhooks as w

NOW = datetime(2026, 3, 2, 8, 30, 15, 250000, tzinfo=timezone.utc)
REPO = Path(__file__).resolve().parents[4]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "notify.yaml"
    path.write_text(text)
    return path


GOOD = """
customers: {csat_survey: false}
robots:
  - name: duty-dingtalk
    kind: dingtalk
    url_env: DT_URL
    secret_env: DT_SECRET
    events: [sla_breached, "ticket_escalated:notify_duty_manager"]
  - name: all-escalations
    kind: wecom
    url_env: WC_URL
    language: en
    events: [ticket_escalated]
"""
ENV = {"DT_URL": "https://oapi.dingtalk.com/robot/send?access_token=tok", "DT_SECRET": "SECabc",
       "WC_URL": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k1"}


def test_shipped_notify_config_loads_without_any_variable():
    config = w.load_notify_config(REPO / "deploy" / "config" / "notify.yaml", {})
    assert config.robots == () and config.csat_survey and config.waiting_on_customer_notice


def test_robots_are_chosen_by_event_and_action(tmp_path):
    config = w.load_notify_config(_write(tmp_path, GOOD), ENV)
    assert not config.csat_survey
    assert [r.name for r in config.robots_for("sla_breached")] == ["duty-dingtalk"]
    assert [r.name for r in config.robots_for("ticket_escalated", "notify_duty_manager")] == ["duty-dingtalk",
                                                                                              "all-escalations"]
    assert [r.name for r in config.robots_for("ticket_escalated", "raise_priority")] == ["all-escalations"]
    assert config.robots_for("sla_warning") == []
    assert "tok" not in repr(config) and "SECabc" not in repr(config)  # credentials stay out of logs


@pytest.mark.parametrize("text,env,message", [
    (GOOD, {**ENV, "DT_SECRET": ""}, "DT_SECRET is not set"),
    (GOOD, {k: v for k, v in ENV.items() if k != "WC_URL"}, "robot 2 'all-escalations': WC_URL is not set"),
    (GOOD, {**ENV, "WC_URL": "ftp://x"}, "not an http(s) address"),
    ("robots:\n  - {name: a, kind: slack, url: 'https://hooks.slack.com/services/x', events: [sla_breached]}", {},
     "use url_env and secret_env"),
    ("robots:\n  - {name: a, kind: wecom, url_env: U, secret_env: S, events: [sla_breached]}", {"U": "http://x", "S": "s"},
     "WeCom robots have no signing"),
    ("robots:\n  - {name: a, kind: slack, url_env: U, events: [ticket_escalation]}", {"U": "http://x"},
     "robot 1 'a': events: Value error, unknown event 'ticket_escalation'"),
    ("robots:\n  - {name: a, kind: teams, url_env: U, events: [sla_breached]}", {"U": "http://x"}, "robot 1 'a': kind"),
    ("robots:\n  - {name: a, kind: slack, url_env: U, events: [sla_breached]}\n"
     "  - {name: a, kind: slack, url_env: U, events: [sla_breached]}", {"U": "http://x"}, "must be unique: a"),
    ("robots: [", {}, "is not valid YAML"),
])
def test_config_mistakes_are_named(tmp_path, text, env, message):
    with pytest.raises(w.NotifyConfigError) as exc:
        w.load_notify_config(_write(tmp_path, text), env)
    assert message in str(exc.value)


def _robot(kind: str, url: str, secret: str | None = None) -> w.Robot:
    return w.Robot(name=f"r-{kind}", kind=kind, url=url, secret=secret, events=frozenset({"sla_breached"}))


def test_dingtalk_request_is_signed_in_the_query_as_documented():
    secret = "SEC0123456789abcdef"
    robot = _robot("dingtalk", "https://oapi.dingtalk.com/robot/send?access_token=tok", secret)
    request = w.build_request(robot, "SLA 已超时：工单 TM-1", "时钟：首次响应\n策略：P1", now=NOW)
    query = parse_qs(urlsplit(request.url).query)
    timestamp = query["timestamp"][0]
    assert timestamp == "1772440215250" and query["access_token"] == ["tok"]  # milliseconds
    expected = base64.b64encode(hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest())
    assert query["sign"][0] == expected.decode()
    raw_sign = urlsplit(request.url).query.split("sign=", 1)[1]
    assert "+" not in raw_sign and "/" not in raw_sign and unquote(raw_sign) == expected.decode()  # URL-encoded
    body = json.loads(request.body)
    assert body["msgtype"] == "markdown" and body["markdown"]["title"] == "SLA 已超时：工单 TM-1"
    assert "时钟：首次响应\n\n策略：P1" in body["markdown"]["text"]


def test_feishu_and_lark_requests_carry_the_signature_in_the_body_as_documented():
    secret = "fs-secret"
    for kind in ("feishu", "lark"):
        robot = _robot(kind, "https://open.feishu.cn/open-apis/bot/v2/hook/abc", secret)
        body = json.loads(w.build_request(robot, "Title", "line", now=NOW).body)
        assert body["timestamp"] == "1772440215"  # seconds, as a string
        key = f"{body['timestamp']}\n{secret}".encode()
        assert body["sign"] == base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
        assert body["msg_type"] == "text" and body["content"] == {"text": "Title\nline"}


def test_unsigned_robots_send_no_signature():
    feishu = json.loads(w.build_request(_robot("feishu", "https://open.feishu.cn/x"), "T", "l", now=NOW).body)
    assert "sign" not in feishu and "timestamp" not in feishu
    ding = w.build_request(_robot("dingtalk", "https://oapi.dingtalk.com/robot/send?access_token=t"), "T", "l", now=NOW)
    assert "sign=" not in ding.url
    wecom = w.build_request(_robot("wecom", "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k"), "T", "l", now=NOW)
    assert json.loads(wecom.body) == {"msgtype": "markdown", "markdown": {"content": "**T**\nl"}}
    slack = w.build_request(_robot("slack", "https://hooks.slack.com/services/a"), "T", "l", now=NOW)
    assert json.loads(slack.body) == {"text": "*T*\nl"} and w.SIGNATURE_HEADER not in slack.headers


def test_slack_style_signature_is_ours_and_covers_the_body():
    robot = _robot("slack", "https://relay.example.com/hook", "slack-secret")
    request = w.build_request(robot, "T", "l", now=NOW)
    timestamp = request.headers[w.TIMESTAMP_HEADER]
    mac = hmac.new(b"slack-secret", b"v1:" + timestamp.encode() + b":" + request.body, hashlib.sha256).hexdigest()
    assert request.headers[w.SIGNATURE_HEADER] == f"v1={mac}"


@pytest.mark.parametrize("kind,status,text,outcome", [
    ("dingtalk", 200, '{"errcode":0,"errmsg":"ok"}', None),
    ("dingtalk", 200, '{"errcode":310000,"errmsg":"sign not match"}', w.RobotRejected),
    ("feishu", 200, '{"code":0,"msg":"success"}', None),
    ("lark", 200, '{"StatusCode":0,"StatusMessage":"success"}', None),
    ("feishu", 200, '{"code":19021,"msg":"sign match fail"}', w.RobotRejected),
    ("wecom", 200, '{"errcode":0,"errmsg":"ok"}', None),
    ("wecom", 200, '{"errcode":93000,"errmsg":"invalid webhook url"}', w.RobotRejected),
    ("slack", 200, "ok", None),
    ("slack", 400, "invalid_payload", w.RobotRejected),
    ("slack", 404, "no_service", w.RobotRejected),
    ("slack", 429, "rate_limited", w.RobotUnavailable),
    ("dingtalk", 502, "bad gateway", w.RobotUnavailable),
    ("wecom", 200, "<html>proxy</html>", w.RobotRejected),
])
def test_answers_are_sorted_into_delivered_retry_and_refused(kind, status, text, outcome):
    robot = _robot(kind, "https://robot.example.com/x")
    if outcome is None:
        w.check_response(robot, status, text)
    else:
        with pytest.raises(outcome):
            w.check_response(robot, status, text)
    assert issubclass(w.RobotUnavailable, w.TransientError) and not issubclass(w.RobotRejected, w.TransientError)


async def test_a_stopping_notifier_hands_robot_messages_back_instead_of_dropping_them():
    poster = w.RobotPoster()
    robot = _robot("slack", "https://hooks.slack.com/services/a")
    with pytest.raises(w.RobotUnavailable, match="stopping"):  # never started
        await poster.post(robot, "T", "l", now=NOW)
    await poster.start()
    await poster.close()
    with pytest.raises(w.RobotUnavailable, match="stopping"):  # closed while the consumer drains
        await poster.post(robot, "T", "l", now=NOW)

import json
import logging

from shared.logging import bound_event_context, configure_logging, get_logger, mask_email, mask_phone


def test_masks_keep_enough_to_recognise_but_not_to_contact():
    assert mask_email("zhang.wei@example.com") == "z***@example.com"
    assert mask_phone("+8613812345678") == "+86138****5678"
    assert "2345" not in mask_phone("010-6234-5678")


def test_json_lines_carry_context_and_never_bodies_secrets_or_addresses(capsys):
    configure_logging("dispatcher", level="INFO", fmt="json", replica="r1")
    try:
        with bound_event_context(trace_id="trace-9", ticket_id="TM-10009"):
            get_logger("t").info("ticket_assigned", email="li.na@example.com", phone="+8613812345678",
                                 text="我的订单没有收到", password="hunter2", agent_id="li.na")
            logging.getLogger("nameko.containers").warning("foreign line")
    finally:
        logging.getLogger().handlers[:] = []
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    first = lines[0]
    assert first["event"] == "ticket_assigned" and first["trace_id"] == "trace-9" and first["ticket_id"] == "TM-10009"
    assert first["service"] == "dispatcher" and first["replica"] == "r1" and first["level"] == "info"
    assert first["email"] == "l***@example.com" and first["phone"] == "+86138****5678"
    assert first["text"] == "<8 chars>" and first["password"] == "***"
    assert lines[1]["event"] == "foreign line" and lines[1]["trace_id"] == "trace-9"


def test_exception_lines_carry_the_traceback_but_no_frame_locals(capsys):
    configure_logging("agent_desk", level="INFO", fmt="json")
    try:
        def login(password, customer_email):
            raise RuntimeError("store unavailable")

        try:
            login("Sup3r-Secret-Pass", "zhang.wei@example.com")
        except RuntimeError:
            get_logger("t").exception("request_failed")
    finally:
        logging.getLogger().handlers[:] = []
    out = capsys.readouterr().err
    line = json.loads(out.splitlines()[0])
    assert line["exception"][0]["exc_value"] == "store unavailable"
    assert any(frame["name"] == "login" for frame in line["exception"][0]["frames"])
    assert "Sup3r-Secret-Pass" not in out and "zhang.wei@example.com" not in out


def test_lines_below_the_level_are_dropped_before_any_processor_builds_them(capsys):
    import structlog

    configure_logging("dispatcher", level="WARNING", fmt="json")
    built: list[str] = []

    def spy(_logger, _name, event):
        built.append(event["event"])
        return event

    first, *rest = structlog.get_config()["processors"]
    structlog.configure(processors=[first, spy, *rest])  # right after the level check
    try:
        log = get_logger("t")
        with bound_event_context(trace_id="trace-1"):
            log.info("ticket_view_updated", status="assigned")
            log.debug("history_event_seen_before")
            log.warning("event_retry_later")
    finally:
        logging.getLogger().handlers[:] = []
    assert built == ["event_retry_later"]
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["event"] for line in lines] == ["event_retry_later"] and lines[0]["trace_id"] == "trace-1"

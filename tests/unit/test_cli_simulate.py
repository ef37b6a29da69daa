"""``ticketmesh simulate``: files in, a table (or JSON) out; bad rows named by file, line and column."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bench.traces import write as write_trace
from shared.cli import main

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "deploy" / "demo" / "simulate"
TRACE_HEADER = "arrival,channel,skill,priority,handle_seconds,patience_seconds"
STAFFING_HEADER = "start,end,agent_id,skills,capacity"
GOOD_TRACE = [TRACE_HEADER, "2026-03-02T08:00:00+08:00,chat,general,2,100,", "1772409610,chat,general,2,50,30"]
GOOD_STAFFING = [STAFFING_HEADER, "2026-03-02T08:00:00+08:00,2026-03-02T16:00:00+08:00,a,general:4,chat=1"]


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["simulate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def files(tmp_path: Path, trace: list[str] = GOOD_TRACE, staffing: list[str] = GOOD_STAFFING,
          config: str | None = None) -> list[str]:
    (tmp_path / "trace.csv").write_text("\n".join(trace) + "\n", encoding="utf-8")
    (tmp_path / "staffing.csv").write_text("\n".join(staffing) + "\n", encoding="utf-8")
    args = ["--trace", str(tmp_path / "trace.csv"), "--staffing", str(tmp_path / "staffing.csv")]
    if config is not None:
        (tmp_path / "config.yaml").write_text(config, encoding="utf-8")
        args += ["--config", str(tmp_path / "config.yaml")]
    return args


def test_the_example_compares_three_policies_in_a_table(capsys):
    code, out, _ = run(capsys, "--trace", str(DEMO / "trace.csv"), "--staffing", str(DEMO / "staffing.csv"),
                       "--config", str(DEMO / "config.yaml"))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("600 contacts, 8 agents")
    policy_rows = [line.split()[0] for line in lines if line.split()[1:2] == ["all"]]
    assert policy_rows == ["default", "least_loaded", "round_robin"]
    assert any(line.startswith("agent008") for line in lines)


def test_json_has_levels_waits_and_agents(capsys, tmp_path):
    config = "routing: {capacity_model: per_channel}\npolicies:\n  - {name: all, first_response: 60}\n"
    code, out, _ = run(capsys, *files(tmp_path, config=config), "--json", "--policies", "default")
    assert code == 0
    report = json.loads(out)
    [result] = report["results"]
    # 08:00+08:00 is epoch 1772409600: the second contact arrives 10 s later, waits 90 s > its 30 s patience.
    assert result["policy"] == "default"
    assert result["overall"]["answered"] == 1 and result["overall"]["abandoned"] == 1
    assert result["by_priority"]["P3"]["contacts"] == 2
    assert result["agents"][0]["agent_id"] == "a" and result["agents"][0]["handled"] == 1
    assert report["priority_levels"] == {"4": "P1", "3": "P2", "2": "P3", "1": "P4"}
    assert report["input"]["config"].endswith("config.yaml")


@pytest.mark.parametrize("row, where", [
    ("2026-03-02T08:00:00,chat,general,high,100,", "line 3, column 'priority': expected an integer, got 'high'"),
    ("yesterday,chat,general,2,100,", "line 3, column 'arrival': expected a time"),
    ("1772409600,fax,general,2,100,", "line 3, column 'channel': expected one of email, chat, phone, got 'fax'"),
    ("1772409600,chat,general,2,-5,", "line 3, column 'handle_seconds': expected a number of seconds >= 0"),
    ("1772409600,chat,general,2,10,soon", "line 3, column 'patience_seconds': expected a number of seconds"),
    ("1772409600,chat,general,2", "line 3: 4 fields, the header has 6"),
])
def test_a_bad_trace_row_is_named_by_file_line_and_column(capsys, tmp_path, row, where):
    code, out, err = run(capsys, *files(tmp_path, trace=GOOD_TRACE[:2] + [row]))
    assert code == 2 and out == ""
    assert err.startswith(f"{tmp_path / 'trace.csv'}: {where}")


def test_a_trace_without_a_required_column_or_with_an_unknown_one_is_refused(capsys, tmp_path):
    code, _, err = run(capsys, *files(tmp_path, trace=["arrival,channel,skill,priority,handle_seconds", "0,chat,,1,1"]))
    assert code == 2 and "line 1: missing column(s) patience_seconds" in err
    code, _, err = run(capsys, *files(tmp_path, trace=[TRACE_HEADER + ",customer_teir", "0,chat,,1,1,,vip"]))
    assert code == 2 and "line 1: unknown column(s) 'customer_teir'" in err


@pytest.mark.parametrize("row, where", [
    ("0,100,a,general:9,chat=1", "line 3, column 'skills': proficiency of 'general' must be 1-5"),
    ("0,100,a,general,chat=lots", "line 3, column 'capacity': capacity for chat must be a whole number"),
    ("0,100,a,general,fax=1", "line 3, column 'capacity': unknown channel 'fax'"),
    ("100,50,a,general,2", "line 3, column 'end': a shift must end after it starts"),
    ("0,100,,general,2", "line 3, column 'agent_id': expected an agent id"),
])
def test_a_bad_staffing_row_is_named_by_file_line_and_column(capsys, tmp_path, row, where):
    code, _, err = run(capsys, *files(tmp_path, staffing=[STAFFING_HEADER, "0,10,z,general,1", row]))
    assert code == 2
    assert err.startswith(f"{tmp_path / 'staffing.csv'}: {where}")


def test_overlapping_shifts_of_one_agent_name_both_lines(capsys, tmp_path):
    staffing = [STAFFING_HEADER, "0,100,a,general,1", "0,100,b,general,1", "50,150,a,general,1"]
    code, _, err = run(capsys, *files(tmp_path, staffing=staffing))
    assert code == 2 and "lines 2 and 4: shifts of a overlap" in err


def test_capacity_as_one_number_applies_to_every_channel(capsys, tmp_path):
    trace = [TRACE_HEADER, "0,chat,,1,10,", "20,email,,1,10,", "40,phone,,1,10,", "45,phone,,1,10,"]
    staffing = [STAFFING_HEADER, "0,100,a,general,1"]
    code, out, _ = run(capsys, *files(tmp_path, trace=trace, staffing=staffing), "--json", "--policies", "default")
    assert code == 0
    overall = json.loads(out)["results"][0]["overall"]
    assert (overall["answered"], overall["mean_wait"]) == (4, 1.25)  # only the second call waits, 5 s


def test_bad_config_and_unknown_policy_are_refused(capsys, tmp_path):
    code, _, err = run(capsys, *files(tmp_path, config="policies:\n  - {name: x, first_response: 0}\n"))
    assert code == 2 and "config.yaml: policy 1 'x': first_response" in err
    code, _, err = run(capsys, *files(tmp_path, config="rules: []\n"))
    assert code == 2 and "expected a mapping with a 'policies' list" in err
    code, _, err = run(capsys, *files(tmp_path), "--policies", "default,fastest")
    assert code == 2 and "unknown policy fastest" in err
    code, _, err = run(capsys, "--trace", str(tmp_path / "missing.csv"), "--staffing", str(tmp_path / "x.csv"))
    assert code == 2 and "cannot read" in err and "missing.csv" in err


def test_thirty_thousand_contacts_with_fifty_agents_in_under_a_minute(capsys, tmp_path):
    trace, staffing = write_trace(tmp_path, 30_000, 50)
    started = time.monotonic()
    code, out, err = run(capsys, "--trace", str(trace), "--staffing", str(staffing), "--json")
    elapsed = time.monotonic() - started
    assert code == 0
    results = json.loads(out)["results"]
    assert [r["policy"] for r in results] == ["default", "least_loaded", "round_robin"]
    for r in results:
        assert r["overall"]["contacts"] == 30_000
        assert r["overall"]["answered"] > 15_000
        assert len(r["agents"]) == 50
    assert err.count("30000 contacts in") == 3  # the progress line of a long run
    assert elapsed < 60, f"30,000 contacts took {elapsed:.1f}s"
    print(f"30k contacts, 50 agents, 3 policies: {elapsed:.1f}s")


def test_the_routing_section_sets_the_capacity_model_like_the_dispatcher(capsys, tmp_path):
    # One agent, email=2;chat=1, busy with an email when a chat arrives. As one shared budget the
    # email uses half of it and a chat needs all of it: the chat waits past its patience. With
    # per_channel caps the chat has its own slot.
    trace = [TRACE_HEADER, "1772409600,email,general,2,1000,", "1772409610,chat,general,2,100,30"]
    staffing = [STAFFING_HEADER, "1772409000,1772440000,a,general:4,email=2;chat=1"]
    answered = {}
    for model in ("shared", "per_channel"):
        config = f"routing: {{capacity_model: {model}, weights: {{proficiency: 0.2}}}}\n" \
                 "policies:\n  - {name: all, first_response: 60}\n"
        code, out, _ = run(capsys, *files(tmp_path, trace, staffing, config=config), "--json", "--policies", "default")
        assert code == 0
        report = json.loads(out)
        assert report["input"]["routing"] == {"capacity_model": model, "proficiency_weight": 0.2,
                                              "preferred_weight": 0.1}
        answered[model] = report["results"][0]["overall"]["answered"], report["results"][0]["overall"]["abandoned"]
    assert answered == {"shared": (1, 1), "per_channel": (2, 0)}
    code, out, _ = run(capsys, *files(tmp_path, trace, staffing, config=config), "--policies", "default")
    assert out.splitlines()[1] == "routing: per_channel capacity, weights proficiency 0.2 preferred 0.1"


def test_a_bad_routing_section_is_named(capsys, tmp_path):
    config = "routing: {capacity_model: per_seat}\npolicies:\n  - {name: all, first_response: 60}\n"
    code, out, err = run(capsys, *files(tmp_path, config=config))
    assert code == 2 and out == ""
    assert "simulation config" in err and "routing.capacity_model" in err

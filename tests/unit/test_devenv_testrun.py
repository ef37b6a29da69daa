"""./dev test's bookkeeping: JUnit counting, the summary line, what counts as failure."""
from pathlib import Path

from devenv.testrun import (GROUPS, Counts, GroupResult, existing_dirs, group_result, parse_junit, pytest_command,
                            report, select_paths, split_args, summary_line)

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="2" tests="7">
  <testcase classname="a" name="test_ok_1"/>
  <testcase classname="a" name="test_ok_2"><system-out>中文输出</system-out></testcase>
  <testcase classname="a" name="test_ok_3"/>
  <testcase classname="a" name="test_fails"><failure message="assert 1 == 2">...</failure></testcase>
  <testcase classname="a" name="test_teardown_errors"><error message="failed on teardown">...</error></testcase>
  <testcase classname="a" name="test_skipped"><skipped message="no"/></testcase>
  <testcase classname="a" name="test_xfail"><skipped type="pytest.xfail" message="known"/></testcase>
</testsuite></testsuites>
"""
EMPTY = '<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="0"/></testsuites>'
COLLECTION_ERROR = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1" tests="1">
<testcase classname="" name="services.x.tests.test_y"><error message="collection failure">ImportError</error></testcase>
</testsuite></testsuites>"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "group.xml"
    path.write_text(text, encoding="utf-8")
    return path


def test_junit_counts_failures_and_errors_as_failed_and_xfail_as_skipped(tmp_path):
    assert parse_junit(write(tmp_path, JUNIT)) == Counts(passed=3, failed=2, skipped=2)


def test_summary_line_is_plain_and_mentions_skipped_only_when_some_were():
    assert summary_line(Counts(3, 2, 2)) == "3 passed, 2 failed, 2 skipped"
    assert summary_line(Counts(12, 0, 0)) == "12 passed, 0 failed"


def test_group_that_collected_zero_tests_fails_even_when_pytest_exits_zero(tmp_path):
    result = group_result(GROUPS[0], 0, write(tmp_path, EMPTY))
    assert not result.ok
    assert result.problem.startswith("ran no tests")


def test_pytest_exit_5_is_a_failure(tmp_path):
    result = group_result(GROUPS[1], 5, write(tmp_path, EMPTY))
    assert not result.ok and result.returncode == 5


def test_missing_junit_report_is_a_failure(tmp_path):
    result = group_result(GROUPS[0], 0, tmp_path / "absent.xml")
    assert not result.ok and "no JUnit report" in result.problem


def test_collection_error_counts_as_failed(tmp_path):
    result = group_result(GROUPS[0], 1, write(tmp_path, COLLECTION_ERROR))
    assert result.counts == Counts(0, 1, 0) and not result.ok


def test_crash_after_passing_tests_is_still_a_failure(tmp_path):
    passing = JUNIT.replace("<failure", "<system-err").replace("</failure>", "</system-err>") \
        .replace("<error", "<system-err").replace("</error>", "</system-err>")
    result = group_result(GROUPS[0], 3, write(tmp_path, passing))
    assert result.counts.failed == 0 and not result.ok


def test_report_ends_with_the_totals_line_and_flags_zero_passed():
    ok = GroupResult(GROUPS[0], Counts(5, 0, 1), 0)
    empty = GroupResult(GROUPS[1], Counts(), 1, "ran no tests")
    lines = report([ok, empty]).splitlines()
    assert lines[-1] == "5 passed, 0 failed, 1 skipped"
    assert any("nameko tier" in line and "FAILED" in line for line in lines)
    assert report([empty]).splitlines()[-2].strip().startswith("no test passed")


def test_existing_dirs_skips_missing_patterns_and_expands_globs(tmp_path):
    for d in ("tests/unit", "services/b/tests/unit", "services/a/tests/unit", "services/a/tests/service"):
        (tmp_path / d).mkdir(parents=True)
    found = existing_dirs(tmp_path, ("tests/unit", "services/*/tests/unit", "tests/e2e", "services/a/tests/service"))
    assert found == ["tests/unit", "services/a/tests/unit", "services/b/tests/unit", "services/a/tests/service"]


def test_named_paths_select_only_the_matching_part_of_each_tier(tmp_path):
    (tmp_path / "services/intake_phone/tests/unit").mkdir(parents=True)
    (tmp_path / "services/intake_phone/tests/unit/test_calls.py").write_text("")
    paths, options = split_args(tmp_path, ["-k", "missed", "services/intake_phone/tests/unit/test_calls.py::test_x", "-x"])
    assert paths == ["services/intake_phone/tests/unit/test_calls.py::test_x"]
    assert options == ["-k", "missed", "-x"]
    asyncio_dirs = ["tests/unit", "services/intake_phone/tests/unit", "services/intake_phone/tests/service"]
    nameko_dirs = ["tests/contract", "services/dispatcher/tests/service"]
    assert select_paths(asyncio_dirs, paths) == paths
    assert select_paths(nameko_dirs, paths) == []
    assert select_paths(asyncio_dirs, ["services/intake_phone"]) == asyncio_dirs[1:]


def test_asyncio_tier_disables_the_nameko_plugin_and_nameko_tier_does_not(tmp_path):
    asyncio_cmd = pytest_command(GROUPS[0], ["tests/unit"], ["-x"], tmp_path / "a.xml", python="py")
    nameko_cmd = pytest_command(GROUPS[1], ["tests/contract"], [], tmp_path / "n.xml", python="py")
    assert asyncio_cmd[:5] == ["py", "-m", "pytest", "-p", "no:pytest_nameko"]
    assert f"--junitxml={tmp_path / 'a.xml'}" in asyncio_cmd and asyncio_cmd[-2:] == ["-x", "tests/unit"]
    assert "no:pytest_nameko" not in nameko_cmd


def test_tests_are_pointed_at_the_servers_that_were_ensured():
    from devenv.config import DevSettings
    from devenv.testrun import pytest_env

    settings = DevSettings.from_env({"TM_REDIS_URL": "redis://127.0.0.1:6391/0", "TM_TEST_REDIS_DB": "7"})
    env = pytest_env({"TM_TEST_AMQP_BASE": "amqp://u:p@elsewhere:5672"}, settings)
    assert env["TM_TEST_REDIS_BASE"] == "redis://127.0.0.1:6391"
    assert env["TM_TEST_REDIS_DB"] == "7"
    assert env["TM_TEST_AMQP_BASE"] == "amqp://u:p@elsewhere:5672"  # the caller's choice wins
    assert env["TM_TEST_RABBIT_MGMT"] == "http://guest:guest@127.0.0.1:15672"


def test_every_test_file_in_the_repository_is_run_by_some_group():
    """A test folder no group names never runs, silently (the console's browser tests once sat so)."""
    root = Path(__file__).resolve().parents[2]
    covered = [root / d for group in GROUPS for d in existing_dirs(root, group.patterns)]
    test_files = [p for p in root.glob("**/test_*.py") if ".venv" not in p.parts and "corpus" not in p.parts]
    orphans = [p.relative_to(root).as_posix() for p in test_files
               if not any(p.is_relative_to(d) for d in covered)]
    assert test_files and orphans == []

"""run_groups with real pytest processes on a throwaway tree: zero tests is never success."""
import os

from devenv.testrun import Counts, TestGroup, run_groups

GROUPS = (TestGroup("first tier", "first", ("ta", "tmissing"), ("-p", "no:pytest_nameko", "-p", "no:cacheprovider")),
          TestGroup("second tier", "second", ("tb",), ("-p", "no:pytest_nameko", "-p", "no:cacheprovider")))


def test_passing_groups_succeed_and_are_counted_from_junit(tmp_path):
    (tmp_path / "ta").mkdir()
    (tmp_path / "ta" / "test_a.py").write_text("def test_one(): assert True\ndef test_two(): assert 1 + 1 == 2\n")
    (tmp_path / "tb").mkdir()
    (tmp_path / "tb" / "test_b.py").write_text("import pytest\ndef test_b(): assert True\n"
                                               "@pytest.mark.xfail\ndef test_known(): assert False\n")
    results, ok = run_groups(tmp_path, tmp_path / "results", [], os.environ, GROUPS)
    assert ok
    assert [r.counts for r in results] == [Counts(2, 0, 0), Counts(1, 0, 1)]


def test_a_group_without_tests_fails_the_run_even_if_the_other_passes(tmp_path):
    (tmp_path / "ta").mkdir()
    (tmp_path / "ta" / "test_a.py").write_text("def test_one(): assert True\n")
    (tmp_path / "tb").mkdir()
    (tmp_path / "tb" / "helpers.py").write_text("X = 1\n")
    results, ok = run_groups(tmp_path, tmp_path / "results", [], os.environ, GROUPS)
    assert not ok
    assert results[1].problem.startswith("ran no tests")


def test_a_failing_test_and_a_broken_module_fail_the_run(tmp_path):
    (tmp_path / "ta").mkdir()
    (tmp_path / "ta" / "test_a.py").write_text("def test_one(): assert True\ndef test_bad(): assert 'a' == 'b'\n")
    (tmp_path / "ta" / "test_broken.py").write_text("import no_such_module_anywhere\n")
    (tmp_path / "tb").mkdir()
    (tmp_path / "tb" / "test_b.py").write_text("def test_b(): assert True\n")
    results, ok = run_groups(tmp_path, tmp_path / "results", [], os.environ, GROUPS)
    assert not ok
    assert results[0].counts == Counts(1, 2, 0)  # the collection error counts, and test_one still ran


def test_naming_a_path_runs_only_its_tier(tmp_path):
    for d in ("ta", "tb"):
        (tmp_path / d).mkdir()
        (tmp_path / d / f"test_{d}.py").write_text("def test_x(): assert True\n")
    results, ok = run_groups(tmp_path, tmp_path / "results", ["tb/test_tb.py"], os.environ, GROUPS)
    assert ok and [r.group.slug for r in results] == ["second"]

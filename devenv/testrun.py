"""``./dev test``: the whole suite, in one pytest process per runtime.

- asyncio tier (``-p no:pytest_nameko``): unit tests, the asyncio contract tests, the asyncio
  services' service tests, the devenv tests and the end-to-end tests;
- nameko tier: the contract tests and the nameko services' service tests (their conftests
  monkey-patch eventlet, which must not happen in the asyncio process).

Each group writes JUnit XML, which is what we count (pytest's exit code alone cannot tell
"0 tests" from "all passed" in every case). A group that collects no test is an error. The
last line is ``N passed, M failed`` (``, K skipped`` when some were): CI greps it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from devenv.config import DevSettings

ASYNCIO_SERVICES = ("intake_chat", "intake_phone", "agent_desk", "notifier")
NAMEKO_SERVICES = ("intake_email", "dispatcher", "sla_watcher")
PYTEST_NO_TESTS_COLLECTED = 5


@dataclass(frozen=True)
class TestGroup:
    name: str
    slug: str
    patterns: tuple[str, ...]        # directories (globs allowed) relative to the repo root
    pytest_args: tuple[str, ...] = ()

    __test__ = False  # not a pytest test class, whatever its name


GROUPS = (
    TestGroup("unit + asyncio tier", "asyncio",
              ("tests/unit", "services/*/tests/unit", "tests/contract_async", "tests/devenv",
               *(f"services/{s}/tests/service" for s in ASYNCIO_SERVICES), "services/*/tests/browser",
               "tests/e2e", "tests/deploy", "tests/observe"),
              ("-p", "no:pytest_nameko")),
    TestGroup("nameko tier", "nameko",
              ("tests/contract", *(f"services/{s}/tests/service" for s in NAMEKO_SERVICES))),
)


@dataclass(frozen=True)
class Counts:
    passed: int = 0
    failed: int = 0       # failures and errors (collection, setup, teardown)
    skipped: int = 0      # skips and xfails

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.skipped

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(self.passed + other.passed, self.failed + other.failed, self.skipped + other.skipped)


@dataclass(frozen=True)
class GroupResult:
    group: TestGroup
    counts: Counts
    returncode: int
    problem: str | None = None     # why the group failed beyond its failing tests

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.problem is None and self.counts.failed == 0


def parse_junit(path: Path) -> Counts:
    """Count test cases by outcome. A case with a failure or an error (also in teardown) failed."""
    root = ET.parse(path).getroot()
    passed = failed = skipped = 0
    for case in root.iter("testcase"):
        tags = {child.tag for child in case}
        if tags & {"failure", "error"}:
            failed += 1
        elif "skipped" in tags:
            skipped += 1
        else:
            passed += 1
    return Counts(passed, failed, skipped)


def summary_line(total: Counts) -> str:
    line = f"{total.passed} passed, {total.failed} failed"
    return f"{line}, {total.skipped} skipped" if total.skipped else line


def group_result(group: TestGroup, returncode: int, junit: Path) -> GroupResult:
    """Judge one finished pytest run from its exit code and its JUnit file."""
    if not junit.exists():
        return GroupResult(group, Counts(), returncode or 1, f"pytest wrote no JUnit report (exit {returncode})")
    try:
        counts = parse_junit(junit)
    except ET.ParseError as exc:
        return GroupResult(group, Counts(), returncode or 1, f"unreadable JUnit report {junit}: {exc}")
    if counts.total == 0 or returncode == PYTEST_NO_TESTS_COLLECTED:
        return GroupResult(group, counts, returncode or 1, "ran no tests (none collected, or all deselected)")
    if returncode != 0 and counts.failed == 0:
        return GroupResult(group, counts, returncode, f"pytest exited with code {returncode}")
    return GroupResult(group, counts, returncode)


def existing_dirs(root: Path, patterns: Sequence[str]) -> list[str]:
    """The pattern directories that exist, in pattern order, relative to ``root``."""
    found: list[str] = []
    for pattern in patterns:
        for path in sorted(root.glob(pattern)):
            rel = path.relative_to(root).as_posix()
            if path.is_dir() and rel not in found:
                found.append(rel)
    return found


def split_args(root: Path, args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate test paths the user named (``tests/unit``, ``a/test_b.py::test_c``) from options."""
    paths, options = [], []
    for arg in args:
        candidate = arg.split("::", 1)[0]
        if not arg.startswith("-") and candidate and (root / candidate).exists():
            paths.append(arg)
        else:
            options.append(arg)
    return paths, options


def _within(child: str, parent: str) -> bool:
    child_parts, parent_parts = Path(child).parts, Path(parent).parts
    return child_parts[:len(parent_parts)] == parent_parts


def select_paths(group_dirs: Sequence[str], wanted: Sequence[str]) -> list[str]:
    """The part of a group the user asked for: named paths inside the group's directories,
    and group directories inside a named path (``services/intake_phone`` selects both tiers)."""
    selected: list[str] = []
    for want in wanted:
        want_path = Path(want.split("::", 1)[0]).as_posix().rstrip("/")
        if any(_within(want_path, d) for d in group_dirs):
            selected.append(want)
        else:
            selected += [d for d in group_dirs if _within(d, want_path)]
    return list(dict.fromkeys(selected))


def pytest_command(group: TestGroup, paths: Sequence[str], options: Sequence[str], junit: Path,
                   python: str = sys.executable) -> list[str]:
    return [python, "-m", "pytest", *group.pytest_args, f"--junitxml={junit}",
            "--continue-on-collection-errors", *options, *paths]


def pytest_env(base: Mapping[str, str], settings: "DevSettings") -> dict[str, str]:
    """The tests' environment: the servers just ensured (unless the caller chose others)."""
    env = dict(base)
    env.setdefault("TM_TEST_REDIS_DB", str(settings.test_redis_db))
    env.setdefault("TM_TEST_REDIS_BASE", _without_path(settings.redis_url))
    env.setdefault("TM_TEST_AMQP_BASE", _without_path(settings.amqp_uri))
    env.setdefault("TM_TEST_RABBIT_MGMT", settings.rabbit_mgmt_url.rstrip("/"))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _without_path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def run_groups(root: Path, results_dir: Path, args: Sequence[str], env: Mapping[str, str],
               groups: Sequence[TestGroup] = GROUPS) -> tuple[list[GroupResult], bool]:
    """Run every group (or the part of it the user named); returns the results and overall success."""
    results_dir.mkdir(parents=True, exist_ok=True)
    wanted, options = split_args(root, args)
    results: list[GroupResult] = []
    for group in groups:
        dirs = existing_dirs(root, group.patterns)
        paths = select_paths(dirs, wanted) if wanted else dirs
        if wanted and not paths:
            continue  # the user named tests of the other tier only
        junit = results_dir / f"{group.slug}.xml"
        junit.unlink(missing_ok=True)
        if not paths:
            results.append(GroupResult(group, Counts(), 1, "no test directories exist for it"))
            continue
        cmd = pytest_command(group, paths, options, junit)
        print(f"\n==> {group.name}: pytest {' '.join(cmd[3:])}", flush=True)
        returncode = subprocess.run(cmd, cwd=root, env=dict(env)).returncode
        results.append(group_result(group, returncode, junit))
    if wanted and not results:
        print(f"none of {wanted} is a test path of either tier", file=sys.stderr)
    total = sum((r.counts for r in results), Counts())
    ok = bool(results) and all(r.ok for r in results) and total.passed > 0
    return results, ok


def report(results: Sequence[GroupResult]) -> str:
    lines = ["", "==> test results"]
    for result in results:
        state = "ok" if result.ok else "FAILED"
        extra = f" — {result.problem}" if result.problem else ""
        lines.append(f"    {result.group.name}: {summary_line(result.counts)} [{state}]{extra}")
    total = sum((r.counts for r in results), Counts())
    if total.passed == 0:
        lines.append("    no test passed: that is a failure, not a success")
    lines.append(summary_line(total))
    return "\n".join(lines)


def run_tests(args: Sequence[str]) -> int:
    """``./dev test``: servers first (started if needed, stopped after), then the groups."""
    from devenv.config import DevSettings
    from devenv.servers import ServerSet, SetupError, ensure_for_tests, say

    settings = DevSettings.from_env()
    with ServerSet() as servers:
        try:
            say("checking the servers the tests need")
            ensure_for_tests(settings, servers)
        except SetupError as exc:
            print(f"\nERROR: {exc}", file=sys.stderr)
            print("0 passed, 0 failed")
            return 2
        results, ok = run_groups(settings.repo_root, settings.var_dir / "test-results", args,
                                 pytest_env(os.environ, settings))
    print(report(results), flush=True)  # after the servers stopped: the totals stay the last line
    return 0 if ok else 1

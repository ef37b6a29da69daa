"""ReloadingFile: a config file re-read when it changes, the last good version kept when it breaks."""
import json
import os

import pytest
import structlog

from shared.reloading import ReloadingFile


def _parse(text: str) -> dict:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("expected an object")
    return value


def _write(path, text: str, *, mtime_step: int = 0) -> None:
    path.write_text(text, encoding="utf-8")
    if mtime_step:  # a coarse-mtime filesystem would not see a rewrite within the same tick
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + mtime_step * 1_000_000_000))


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "rules.json"
    _write(path, '{"v": 1}')
    return path


def test_first_load_parses_and_a_bad_first_version_raises(config, tmp_path):
    reloading = ReloadingFile(config, _parse, now=0.0, interval=5)
    assert reloading.current(0.0) == {"v": 1} and reloading.version == 1
    bad = tmp_path / "bad.json"
    bad.write_text("[1]", encoding="utf-8")
    with pytest.raises(ValueError, match="expected an object"):
        ReloadingFile(bad, _parse, now=0.0)
    with pytest.raises(OSError):
        ReloadingFile(tmp_path / "missing.json", _parse, now=0.0)


def test_a_change_is_seen_after_the_interval_not_before(config):
    reloading = ReloadingFile(config, _parse, now=100.0, interval=5)
    _write(config, '{"v": 2}', mtime_step=1)
    with structlog.testing.capture_logs() as logs:
        assert reloading.current(104.9) == {"v": 1}  # not looked at yet
        assert reloading.current(105.0) == {"v": 2}
    assert reloading.version == 2
    assert [e["event"] for e in logs] == ["config_reloaded"]
    assert logs[0]["path"] == str(config) and logs[0]["version"] == 2


def test_a_bad_version_keeps_the_last_good_value_and_is_logged_once(config):
    parsed = []

    def counting(text: str) -> dict:
        parsed.append(text)
        return _parse(text)

    reloading = ReloadingFile(config, counting, now=0.0, interval=1, name="rules")
    with structlog.testing.capture_logs() as logs:
        _write(config, '{"v": ', mtime_step=1)
        assert reloading.current(1.0) == {"v": 1}
        assert reloading.current(2.0) == {"v": 1}
        _write(config, '{"v": ', mtime_step=2)  # rewritten, same broken content: no second line
        assert reloading.current(3.0) == {"v": 1}
        assert parsed == ['{"v": 1}', '{"v": ']  # nor a second parse
        _write(config, '[2]', mtime_step=3)    # another broken version: one more line
        assert reloading.current(4.0) == {"v": 1}
        _write(config, '{"v": 3}', mtime_step=4)
        assert reloading.current(5.0) == {"v": 3}
    events = [(e["event"], e.get("error", "")) for e in logs]
    assert [e for e, _ in events] == ["config_reload_failed", "config_reload_failed", "config_reloaded"]
    assert "Expecting value" in events[0][1] and events[1][1] == "expected an object"
    assert logs[0]["config"] == "rules" and logs[0]["kept_version"] == 1
    assert reloading.last_error is None and reloading.version == 2


def test_a_missing_file_keeps_the_value_and_its_return_is_noticed(config):
    reloading = ReloadingFile(config, _parse, now=0.0, interval=1)
    config.unlink()
    with structlog.testing.capture_logs() as logs:
        assert reloading.current(1.0) == {"v": 1}
        assert reloading.current(2.0) == {"v": 1}
    assert [e["event"] for e in logs] == ["config_reload_failed"] and "cannot read" in logs[0]["error"]
    assert reloading.last_error
    _write(config, '{"v": 4}')
    assert reloading.current(3.0) == {"v": 4}


def test_same_content_rewritten_is_not_parsed_again(config):
    calls = []

    def counting(text: str) -> dict:
        calls.append(text)
        return _parse(text)

    reloading = ReloadingFile(config, counting, now=0.0, interval=1)
    _write(config, '{"v": 1}', mtime_step=1)  # touched, same bytes
    with structlog.testing.capture_logs() as logs:
        assert reloading.current(1.0) == {"v": 1}
    assert len(calls) == 1 and logs == [] and reloading.version == 1


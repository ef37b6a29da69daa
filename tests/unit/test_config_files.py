"""Reading config files: every way a file can be unreadable ends in the caller's error type,
naming the file (never a bare ValueError or yaml error from deep inside PyYAML)."""
from __future__ import annotations

import pytest

from shared.config_files import ConfigFileError, read_yaml


class RulesError(ConfigFileError):
    pass


@pytest.mark.parametrize("text, says", [
    ("rules:\n  - name: a\n    when: 2026-02-30\n", "is not valid YAML: day is out of range"),
    ("rules: [unclosed\n", "is not valid YAML"),
])
def test_unreadable_values_name_the_file(tmp_path, text, says):
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RulesError) as caught:
        read_yaml(path, "routing rules", RulesError)
    assert str(path) in str(caught.value) and says in str(caught.value)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(RulesError, match="cannot read routing rules .*missing.yaml"):
        read_yaml(tmp_path / "missing.yaml", "routing rules", RulesError)

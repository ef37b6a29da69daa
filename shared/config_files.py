"""Reading the mesh's YAML config files (routing rules, SLA policies) with errors people can act on.

A file is a mapping whose main part is a list of named entries (``rules``, ``policies``). A
validation error names the file, the entry by position *and* name, and the field:
``sla policies deploy/config/sla.yaml: policy 2 'p1 chat': first_response: Input should be
greater than 0``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import ValidationError


class ConfigFileError(ValueError):
    """A config file cannot be used; the message names the file and the entry."""


def read_yaml(path: str | Path, what: str, error: type[ConfigFileError] = ConfigFileError) -> Any:
    """Parse the file; ``what`` ("routing rules") starts every message."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {exc}") from None
    except ValueError as exc:  # PyYAML's own constructors raise it, e.g. for the date 2026-02-30
        raise error(f"{what} {path} is not valid YAML: {exc}") from None


def describe_validation_error(data: Any, exc: ValidationError, *, list_key: str, entry_label: str) -> str:
    """The first error of ``exc`` as ``<entry_label> <n> '<name>': <field>: <message>``."""
    err = exc.errors()[0]
    loc = list(err["loc"])
    if len(loc) >= 2 and loc[0] == list_key and isinstance(loc[1], int):
        index = loc[1]
        entries = data.get(list_key) if isinstance(data, Mapping) else None
        name = None
        if isinstance(entries, list) and index < len(entries) and isinstance(entries[index], Mapping):
            name = entries[index].get("name")
        label = f"{entry_label} {index + 1}" + (f" {name!r}" if name else "")
        field = ".".join(str(p) for p in loc[2:]) or entry_label
        return f"{label}: {field}: {err['msg']}"
    where = ".".join(str(p) for p in loc) or "file"
    return f"{where}: {err['msg']}"


def repeated_names(names: list[str]) -> list[str]:
    return sorted({n for n in names if names.count(n) > 1})

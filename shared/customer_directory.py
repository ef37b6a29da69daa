"""The customer directory file ``ticketmesh customers import`` reads (pure: parsing only).

The company's own records say who its customers are, which tier (e.g. VIP) and language each
has. One row per customer, as CSV with a header row or as YAML (a list, or ``customers:`` list)::

    email,phone,external_user_id,name,tier,language
    zhang.wei@example.com;zw@example.cn,13812345678,u-1001,张伟,vip,zh

    customers:
      - {email: [zhang.wei@example.com, zw@example.cn], phone: "13812345678", external_user_id: u-1001,
         name: 张伟, tier: vip, language: zh}

- identifiers (at least one per row): ``email`` and ``phone`` (several separated by ``;`` in
  CSV, or a YAML list), ``external_user_id`` (one); they are the company's word, so they count
  as verified: a row whose identifiers belong to several profiles joins them;
- attributes: ``name``, ``tier``, ``language``; an empty cell leaves the stored value alone
  (clearing one is the API's ``PUT`` with null);
- an identifier on two rows is an error on the later row (one identifier, one customer);
- CSV is UTF-8 (a BOM is fine); a file that is not is read as GB18030 (what Excel saves in China).

Every problem is reported with its line number; the rows without problems are still imported.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

import yaml

from shared.customer_identity import (
    ATTRIBUTE_NORMALIZERS,
    DEFAULT_REGION,
    Identifier,
    InvalidAttribute,
    InvalidIdentifier,
    identifier,
)

IDENTIFIER_COLUMNS = {"email": "email", "phone": "phone", "external_user_id": "external_user"}
ATTRIBUTE_COLUMNS = ("name", "tier", "language")
COLUMNS = (*IDENTIFIER_COLUMNS, *ATTRIBUTE_COLUMNS)
MAX_ROWS = 200_000
MULTI_SEPARATOR = ";"


class DirectoryFileError(ValueError):
    """The file as a whole cannot be read (not CSV/YAML, no header, wrong shape)."""


@dataclass(frozen=True)
class DirectoryRow:
    line: int
    identifiers: tuple[Identifier, ...]
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RowError:
    line: int
    message: str


@dataclass(frozen=True)
class DirectoryFile:
    rows: tuple[DirectoryRow, ...]
    errors: tuple[RowError, ...]
    encoding: str = "utf-8"


def parse_directory(data: bytes, filename: str, default_region: str = DEFAULT_REGION) -> DirectoryFile:
    """Rows and per-row errors of a ``.csv`` or ``.yaml``/``.yml`` file's bytes."""
    lower = filename.lower()
    if lower.endswith(".csv"):
        text, encoding = _decode(data)
        entries = _csv_entries(text)
    elif lower.endswith((".yaml", ".yml")):
        text, encoding = _decode(data)
        entries = _yaml_entries(text)
    else:
        raise DirectoryFileError(f"{filename}: expected a .csv or .yaml file")
    rows: list[DirectoryRow] = []
    errors: list[RowError] = []
    seen: dict[Identifier, int] = {}
    for line, entry in entries:
        if len(rows) + len(errors) >= MAX_ROWS:
            raise DirectoryFileError(f"{filename}: more than {MAX_ROWS} rows; split the file")
        if isinstance(entry, RowError):
            errors.append(entry)
            continue
        try:
            row = _row(line, entry, default_region)
        except (InvalidIdentifier, InvalidAttribute, ValueError) as exc:
            errors.append(RowError(line, str(exc)))
            continue
        clash = next(((i, seen[i]) for i in row.identifiers if i in seen), None)
        if clash:
            errors.append(RowError(line, f"{clash[0].kind} {clash[0].value} is also on line {clash[1]} "
                                         f"(one identifier, one customer)"))
            continue
        for ident in row.identifiers:
            seen[ident] = line
        rows.append(row)
    return DirectoryFile(tuple(rows), tuple(errors), encoding)


def _decode(data: bytes) -> tuple[str, str]:
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030"), "gb18030"
    except UnicodeDecodeError:
        raise DirectoryFileError("neither UTF-8 nor GB18030 text") from None


def _csv_entries(text: str) -> list[tuple[int, dict[str, Any] | RowError]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DirectoryFileError("the file is empty: expected a header row "
                                 f"({', '.join(COLUMNS)})") from None
    except csv.Error as exc:
        raise DirectoryFileError(f"line 1: {exc}") from None
    names = [h.strip().lower() for h in header]
    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        raise DirectoryFileError(f"line 1: unknown columns {', '.join(unknown)} (known: {', '.join(COLUMNS)})")
    if not set(names) & set(IDENTIFIER_COLUMNS):
        raise DirectoryFileError(f"line 1: no identifier column ({', '.join(IDENTIFIER_COLUMNS)})")
    if len(set(names)) != len(names):
        raise DirectoryFileError("line 1: a column is named twice")
    entries: list[tuple[int, dict[str, Any] | RowError]] = []
    line = reader.line_num
    while True:
        start = line + 1
        try:
            cells = next(reader)
        except StopIteration:
            return entries
        except csv.Error as exc:
            entries.append((start, RowError(start, f"not CSV: {exc}")))
            return entries
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue  # blank lines are not rows
        if len(cells) != len(names):
            entries.append((start, RowError(start, f"{len(cells)} cells for {len(names)} columns")))
            continue
        entries.append((start, {n: c for n, c in zip(names, cells)}))


class _LineLoader(yaml.SafeLoader):
    """Remembers the line each mapping starts on."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    mapping = loader.construct_mapping(node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_entries(text: str) -> list[tuple[int, dict[str, Any] | RowError]]:
    try:
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise DirectoryFileError(f"not valid YAML: {exc}") from None
    if isinstance(data, dict) and "customers" in data:
        data = data["customers"]
    if not isinstance(data, list):
        raise DirectoryFileError("expected a list of customers (or a customers: list)")
    entries: list[tuple[int, dict[str, Any] | RowError]] = []
    for n, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            entries.append((0, RowError(0, f"entry {n}: expected a mapping of {', '.join(COLUMNS)}")))
            continue
        line = item.pop("__line__", 0)
        unknown = sorted(str(k) for k in item if k not in COLUMNS)
        if unknown:
            entries.append((line, RowError(line, f"unknown fields {', '.join(unknown)}")))
            continue
        entries.append((line, item))
    return entries


def _values(raw: Any, column: str) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, list):
        items = raw
    elif isinstance(raw, (str, int)) and not isinstance(raw, bool):
        items = str(raw).split(MULTI_SEPARATOR) if column != "external_user_id" else [str(raw)]
    else:
        raise ValueError(f"{column}: expected text")
    values = []
    for item in items:
        if not isinstance(item, (str, int)) or isinstance(item, bool):
            raise ValueError(f"{column}: expected text")
        if str(item).strip():
            values.append(str(item).strip())
    if column == "external_user_id" and len(values) > 1:
        raise ValueError("external_user_id: one company user id per customer")
    return values


def _row(line: int, entry: dict[str, Any], default_region: str) -> DirectoryRow:
    identifiers: list[Identifier] = []
    for column, kind in IDENTIFIER_COLUMNS.items():
        for value in _values(entry.get(column), column):
            try:
                found = identifier(kind, value, default_region)
            except InvalidIdentifier as exc:
                raise InvalidIdentifier(f"{column}: {exc}") from None
            if found not in identifiers:
                identifiers.append(found)
    if not identifiers:
        raise ValueError(f"no identifier: give at least one of {', '.join(IDENTIFIER_COLUMNS)}")
    attributes: dict[str, str] = {}
    for column in ATTRIBUTE_COLUMNS:
        raw = entry.get(column)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue  # an empty cell leaves the stored value alone
        if not isinstance(raw, str):
            raise ValueError(f"{column}: expected text")
        attributes[column] = ATTRIBUTE_NORMALIZERS[column](raw)
    return DirectoryRow(line, tuple(identifiers), attributes)

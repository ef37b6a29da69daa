"""The customer directory file: rows, identifiers, attributes and per-line errors."""
import pytest

from shared.customer_directory import DirectoryFileError, parse_directory
from shared.customer_identity import Identifier

CSV = """email,phone,external_user_id,name,tier,language
zhang.wei@example.com;ZW@example.cn,138 1234 5678,u-1001,张伟,VIP,zh
li.si@example.com,,,李四,,
,,,nobody,gold,en
bad-address,,,,,
wang.wu@example.com,,,王五,v i p,
,+8613812345678,,dup,,

,,u-1002,"multi
line name",,
"""


def test_csv_rows_with_their_lines_and_errors():
    parsed = parse_directory(CSV.encode("utf-8"), "customers.csv")
    assert [r.line for r in parsed.rows] == [2, 3, 9]
    first = parsed.rows[0]
    assert first.identifiers == (Identifier("email", "zhang.wei@example.com"), Identifier("email", "zw@example.cn"),
                                 Identifier("phone", "+8613812345678"), Identifier("external_user", "u-1001"))
    assert first.attributes == {"name": "张伟", "tier": "vip", "language": "zh"}
    assert parsed.rows[1].attributes == {"name": "李四"}  # empty cells leave stored values alone
    assert parsed.rows[2].attributes == {"name": "multi line name"}
    errors = {e.line: e.message for e in parsed.errors}
    assert set(errors) == {4, 5, 6, 7}
    assert errors[4].startswith("no identifier")
    assert errors[5].startswith("email:")
    assert errors[6].startswith("tier 'v i p'")
    assert errors[7] == "phone +8613812345678 is also on line 2 (one identifier, one customer)"


def test_csv_from_excel_in_china_is_gb18030_and_a_bom_is_fine():
    gbk = "email,name,tier\nzhang.wei@example.com,张伟,vip\n".encode("gb18030")
    parsed = parse_directory(gbk, "x.csv")
    assert parsed.encoding == "gb18030" and parsed.rows[0].attributes["name"] == "张伟"
    bom = "\ufeffemail,tier\nzhang.wei@example.com,vip\n".encode("utf-8")
    assert parse_directory(bom, "x.csv").rows[0].attributes == {"tier": "vip"}


@pytest.mark.parametrize("text, message", [
    ("", "the file is empty"),
    ("email,favourite_colour\n", "line 1: unknown columns favourite_colour"),
    ("name,tier\n", "line 1: no identifier column"),
])
def test_unusable_csv(text, message):
    with pytest.raises(DirectoryFileError, match=message):
        parse_directory(text.encode(), "x.csv")


YAML = """customers:
  - email: [zhang.wei@example.com, zw@example.cn]
    phone: "13812345678"
    tier: vip
    language: zh-CN
  - {external_user_id: u-2, name: Sam}
  - {email: nobody}
  - {phone: 13900000000, colour: red}
  - just a string
"""


def test_yaml_rows_with_their_lines():
    parsed = parse_directory(YAML.encode(), "customers.yaml")
    assert [r.line for r in parsed.rows] == [2, 6]
    assert parsed.rows[0].attributes == {"tier": "vip", "language": "zh-cn"}
    assert parsed.rows[1].identifiers == (Identifier("external_user", "u-2"),)
    errors = {e.line: e.message for e in parsed.errors}
    assert errors[7].startswith("email:")
    assert errors[8] == "unknown fields colour"
    assert errors[0].startswith("entry 5:")


def test_other_files_are_refused():
    with pytest.raises(DirectoryFileError, match="expected a .csv or .yaml"):
        parse_directory(b"{}", "customers.json")
    with pytest.raises(DirectoryFileError, match="expected a list"):
        parse_directory(b"a: 1", "x.yml")

"""``ticketmesh customers import|show`` against a real Redis."""
import json

from shared.cli import main
from shared.customer_identity import ContactIdentifiers, Identifier
from shared.customer_store import CustomerStore

DIRECTORY = """email,phone,external_user_id,name,tier,language
zhang.wei@example.com,138 1234 5678,u-1001,张伟,VIP,zh
sam@example.com,,,Sam Taylor,gold,en
broken,,,,,
li.si@example.com,+8613812345678,,李四,,
"""


def cli(capsys, monkeypatch, redis_url, *args):
    monkeypatch.setenv("TM_REDIS_URL", redis_url)
    monkeypatch.setenv("TM_PHONE_DEFAULT_REGION", "CN")
    capsys.readouterr()
    code = main(["customers", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_import_reports_each_row_and_a_second_import_changes_nothing(redis_client, redis_url, capsys, monkeypatch,
                                                                      tmp_path):
    # Zhang Wei wrote in before the import: the directory joins his mail profile with the rest.
    CustomerStore(redis_client).resolve(ContactIdentifiers(verified=(Identifier("email", "zhang.wei@example.com"),)),
                                        now=1.0)
    path = tmp_path / "customers.csv"
    path.write_text(DIRECTORY, encoding="utf-8")

    code, out, err = cli(capsys, monkeypatch, redis_url, "import", str(path), "--dry-run", "--json")
    report = json.loads(out)
    assert code == 1 and report["dry_run"]
    assert report["counts"] == {"created": 1, "updated": 1, "unchanged": 0, "errors": 2}
    assert CustomerStore(redis_client).profile("CU-1").tier is None  # a dry run writes nothing

    code, out, err = cli(capsys, monkeypatch, redis_url, "import", str(path))
    assert code == 1
    assert "line 2: updated CU-1" in out and "line 3: created CU-2" in out
    assert "line 4: error: email:" in err
    assert "line 5: error: phone +8613812345678 is also on line 2" in err
    assert out.strip().endswith("2 rows were imported: 1 created, 1 updated, 0 unchanged; 2 rows with errors")
    profile = CustomerStore(redis_client).profile("CU-1")
    assert (profile.tier, profile.language, profile.name, profile.external_user) == ("vip", "zh", "张伟", "u-1001")
    assert Identifier("phone", "+8613812345678") in profile.identifiers

    code, out, _ = cli(capsys, monkeypatch, redis_url, "import", str(path), "--json")
    assert json.loads(out)["counts"] == {"created": 0, "updated": 0, "unchanged": 2, "errors": 2}
    assert redis_client.get("tm:customers:seq") == "2"


def test_show_finds_a_customer_by_any_identifier(redis_client, redis_url, capsys, monkeypatch, tmp_path):
    path = tmp_path / "customers.yaml"
    path.write_text("- {email: zhang.wei@example.com, phone: '13812345678', tier: vip, name: 张伟}\n", encoding="utf-8")
    assert cli(capsys, monkeypatch, redis_url, "import", str(path))[0] == 0
    store = CustomerStore(redis_client)
    store.record_ticket("CU-1", "TM-7", channel="email", received=9e9)

    code, out, _ = cli(capsys, monkeypatch, redis_url, "show", "+86 138 1234 5678")
    assert code == 0
    assert "customer:     CU-1" in out and "tier:         vip" in out
    assert "open tickets: TM-7 (email)" in out
    code, out, _ = cli(capsys, monkeypatch, redis_url, "show", "Zhang.Wei@example.com", "--json")
    data = json.loads(out)
    assert data["customer_id"] == "CU-1" and data["history"]["open_tickets"] == [{"ticket_id": "TM-7",
                                                                                  "channel": "email"}]
    code, _, err = cli(capsys, monkeypatch, redis_url, "show", "nobody@example.com")
    assert code == 2 and "no customer profile for nobody@example.com" in err
    code, _, err = cli(capsys, monkeypatch, redis_url, "show", "hello")
    assert code == 2 and err.startswith("not an identifier")

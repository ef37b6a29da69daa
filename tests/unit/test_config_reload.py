"""Where each replica stands on a reload request (shared/config_reload.py), from its report."""
from shared.config_reload import DIFFERENT, GONE, LOADED, WAITING, confirmed, outcomes


def report(handled, sha, error=None):
    return {"handled": handled, "files": {"roster": {"path": "/etc/r.yaml", "sha256": sha, "version": 3,
                                                     "loaded_at": 100.0, "error": error}}}


def statuses(reports, live=("a", "b", "c", "d")):
    result = outcomes(["a", "b", "c", "d"], reports, name="roster", request=7, sha256="new", live=live)
    return {r.replica: r.status for r in result}, result


def test_a_replica_counts_once_it_acted_on_this_request_or_a_later_one_with_the_same_content():
    got, result = statuses({"a": report(7, "new"), "b": report(8, "new"), "c": report(6, "new"),
                            "d": report(9, "old", error="roster: agents.0.skills: bad")})
    assert got == {"a": LOADED, "b": LOADED, "c": WAITING, "d": DIFFERENT}
    assert result[3].error == "roster: agents.0.skills: bad" and result[3].sha256 == "old"
    assert not confirmed(result)


def test_a_replica_without_a_report_waits_and_one_whose_heartbeat_went_away_does_not_block():
    got, result = statuses({"a": report(7, "new"), "b": report(7, "new"), "c": report(7, "new")},
                           live=("a", "b", "c"))
    assert got == {"a": LOADED, "b": LOADED, "c": LOADED, "d": GONE}
    assert confirmed(result)
    got, result = statuses({"a": report(7, "new"), "b": report(7, "new"), "c": report(7, "new")})
    assert got["d"] == WAITING and not confirmed(result)


def test_a_report_without_the_file_is_not_an_answer_for_it():
    got, _ = statuses({"a": {"handled": 7, "files": {"rules": {"sha256": "new"}}}})
    assert got["a"] == WAITING

"""The routing: section of the rules file."""
import pytest

from services.dispatcher.policy import DEFAULT_POLICY, PolicyError, load_policy, parse_policy


def test_absent_section_means_defaults():
    assert parse_policy({"rules": []}) == DEFAULT_POLICY
    assert DEFAULT_POLICY.capacity_model == "shared" and DEFAULT_POLICY.offer_timeout_seconds == 60
    assert DEFAULT_POLICY.decline_cooldown_seconds == 900 and DEFAULT_POLICY.fairness_max is None


def test_full_section_is_read_in_seconds():
    policy = parse_policy({"routing": {
        "capacity_model": "per_channel", "offer_timeout_seconds": 45, "decline_cooldown_seconds": 60,
        "fairness": {"window_minutes": 30, "max_assignments": 8}, "sticky": {"within_hours": 2},
        "relaxation": [{"after_seconds": 60, "step": "drop_preferred"}, {"after_seconds": 300, "step": "next_tier"}],
        "weights": {"proficiency": 0.2, "preferred": 0.05}}})
    assert (policy.capacity_model, policy.offer_timeout_seconds, policy.offers) == ("per_channel", 45, True)
    assert (policy.fairness_window_seconds, policy.fairness_max) == (1800, 8)
    assert policy.sticky_within_seconds == 7200
    assert [(r.after_seconds, r.step) for r in policy.relaxation] == [(60, "drop_preferred"), (300, "next_tier")]
    assert (policy.proficiency_weight, policy.preferred_weight) == (0.2, 0.05)
    assert not parse_policy({"routing": {"offer_timeout_seconds": 0}}).offers


@pytest.mark.parametrize("section, message", [
    ({"capacity_model": "pooled"}, "routing.capacity_model: Input should be 'shared' or 'per_channel'"),
    ({"fairness": {"window_minutes": 60}}, "routing.fairness.max_assignments: Field required"),
    ({"relaxation": [{"after_seconds": 5, "step": "shrug"}]}, "routing.relaxation.1.step: Input should be"),
    ({"relaxation": [{"after_seconds": 50, "step": "next_tier"}, {"after_seconds": 5, "step": "widen_group"}]},
     "routing.relaxation: Value error, steps must be listed in order of after_seconds"),
    ({"offer_timeout": 5}, "routing.offer_timeout: Extra inputs are not permitted"),
    ("yes", "routing: expected a mapping, got str"),
])
def test_errors_name_the_file_and_field(tmp_path, section, message):
    path = tmp_path / "routing.yaml"
    import yaml
    path.write_text(yaml.safe_dump({"routing": section}), encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(caught.value).startswith(f"routing policy {path}: ")
    assert message in str(caught.value)

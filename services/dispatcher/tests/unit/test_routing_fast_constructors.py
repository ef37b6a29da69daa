"""The fast constructors of routing snapshots and candidates build the very instances the
dataclasses' own ``__init__`` builds: equal, frozen, hashable alike, every field set."""
from __future__ import annotations

import dataclasses
import inspect

import pytest

from services.dispatcher.routing import AgentSnapshot, Candidate, new_candidate, new_snapshot


@pytest.mark.parametrize("cls, make, values", [
    (AgentSnapshot, new_snapshot, ("a", "online", {"general": 3}, ("zh", "en"), {"chat": 3}, {"chat": 1}, 12.5,
                                   "billing", "L2", 4)),
    (Candidate, new_candidate, ("a", 2, 3, 4, 60.0, 0.66, 0.8, 0.5, 0.81, True)),
])
def test_fast_constructor_builds_the_dataclass_instance(cls, make, values):
    names = [f.name for f in dataclasses.fields(cls)]
    # Every field, in declaration order: a field added to the class must be added here too.
    assert list(inspect.signature(make).parameters) == names
    fast, slow = make(*values), cls(*values)
    assert fast == slow and type(fast) is cls and repr(fast) == repr(slow)
    assert all(getattr(fast, n) == v for n, v in zip(names, values))
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(fast, names[0], "other")
    if cls is Candidate:
        assert hash(fast) == hash(slow)

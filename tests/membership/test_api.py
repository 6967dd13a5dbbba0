"""The public API of `copycat.membership` is pinned, and no kinship type leaks into it."""

from __future__ import annotations

import importlib
import inspect
import types

import copycat.membership

MEMBERSHIP_API = frozenset(
    {
        "PROTOCOL_VERSION",
        "DirectoryChanged",
        "DirectoryEntry",
        "EntryKey",
        "EventsLost",
        "MemberFailed",
        "MemberInfo",
        "MemberJoined",
        "MemberLeft",
        "MemberRecovered",
        "MemberState",
        "MemberSuspect",
        "MemberUpdated",
        "Membership",
        "MembershipConfig",
        "MembershipCounters",
        "MembershipEvent",
        "MembershipEvents",
        "Preset",
        "Replica",
        "Role",
        "View",
    }
)


def test_exports_are_pinned_and_resolve() -> None:
    assert set(copycat.membership.__all__) == MEMBERSHIP_API
    for name in MEMBERSHIP_API:
        assert hasattr(copycat.membership, name), name


def test_public_classes_are_documented_and_free_of_kinship() -> None:
    for name in MEMBERSHIP_API:
        obj = getattr(copycat.membership, name)
        if not inspect.isclass(obj):
            continue
        assert obj.__doc__, f"{name} has no docstring"
        assert obj.__module__.startswith("copycat.membership."), name
        for member_name, member in vars(obj).items():
            if member_name.startswith("_") or not callable(member):
                continue
            hints = getattr(member, "__annotations__", {})
            assert not any("kinship" in str(h).lower() for h in hints.values()), (name, member_name)


def test_only_the_gossip_adapter_imports_kinship() -> None:
    for name in ("_config", "_directory", "_membership", "_meta", "_view", "_wire"):
        module = importlib.import_module(f"copycat.membership.{name}")
        imported = {
            value.__name__ for value in vars(module).values() if isinstance(value, types.ModuleType)
        }
        assert not any(m.startswith("kinship") for m in imported), name

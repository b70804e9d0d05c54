"""The permission rules of SPEC.md §4 as a table: pure functions, no server."""

from __future__ import annotations

import pytest

from reconciler.api import authz
from reconciler.api.authz import Access, Actor
from reconciler.manifest.model import AccessNode, AclRule, BaseCheck, Check, Connection, Group, Listen, Upstream, User

UPSTREAM = Upstream(
    "app",
    "team-a",
    Listen(),
    checks=("chk-a",),
    acl=(AclRule("team-w", "WRITE"), AclRule("team-r", "READ"), AclRule("team-d", "DENY")),
)
CHECK_A = Check("chk-a", "team-a", BaseCheck.TCP)
CHECK_B = Check("chk-b", "team-b", BaseCheck.TCP)
NODE = AccessNode("lb:80", "team-a", Connection())


def actor(*groups: str, flags: tuple[str, ...] = ()) -> Actor:
    return Actor("u", frozenset(groups), frozenset(flags))


N, R, W = Access.NONE, Access.READ, Access.WRITE


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        (actor("team-a"), W),  # owner
        (actor("team-w"), W),  # ACL WRITE
        (actor("team-r"), R),  # ACL READ
        (actor("team-d"), N),  # ACL DENY
        (actor("team-d", flags=("GLOBAL_RO",)), N),  # DENY beats GLOBAL_RO
        (actor("team-d", "team-r"), R),  # the union over groups: READ from another group
        (actor("x", flags=("GLOBAL_RO",)), R),
        (actor("x", flags=("GLOBAL_RW",)), W),
        (actor("x", flags=("SUPER",)), W),
        (actor("x", flags=("MANAGEMENT",)), N),
        (actor("x"), N),
    ],
)
def test_upstream_access(who: Actor, expected: Access) -> None:
    assert authz.upstream_access(who, UPSTREAM) == expected


@pytest.mark.parametrize(
    ("who", "check", "expected"),
    [
        (actor("team-a"), CHECK_A, W),
        (actor("team-r"), CHECK_A, R),  # may read an upstream using it
        (actor("team-d"), CHECK_A, N),
        (actor("x", flags=("GLOBAL_RO",)), CHECK_B, R),
        (actor("team-a"), CHECK_B, N),  # nobody readable uses it
        (actor("x", flags=("GLOBAL_RW",)), CHECK_B, W),
        (actor("x", flags=("MANAGEMENT",)), CHECK_A, N),
    ],
)
def test_check_access(who: Actor, check: Check, expected: Access) -> None:
    assert authz.check_access(who, check, [UPSTREAM]) == expected


@pytest.mark.parametrize(
    ("who", "allowed"),
    [
        (actor("team-a"), False),  # another group's check needs GLOBAL_RO
        (actor("team-b"), True),
        (actor("team-a", flags=("GLOBAL_RO",)), True),
        (actor("team-a", flags=("GLOBAL_RW",)), True),
        (actor("team-a", flags=("MANAGEMENT",)), False),
    ],
)
def test_check_reuse_needs_global_ro(who: Actor, allowed: bool) -> None:
    assert authz.may_use_check(who, CHECK_B) is allowed


@pytest.mark.parametrize(
    ("who", "expected", "may_change_connection"),
    [
        (actor("team-a"), W, False),
        (actor("x", flags=("GLOBAL_RW",)), W, False),
        (actor("x", flags=("SUPER",)), W, True),
        (actor("x", flags=("GLOBAL_RO",)), R, False),
        (actor("x", flags=("MANAGEMENT",)), N, False),
    ],
)
def test_access_nodes(who: Actor, expected: Access, may_change_connection: bool) -> None:
    assert authz.access_node_access(who, NODE) == expected
    assert authz.may_change_access_node(who, {"description", "upstreams"})
    assert authz.may_change_access_node(who, {"connection"}) is may_change_connection
    assert authz.may_change_access_node(who, {"nginx"}) is may_change_connection
    assert authz.may_create_access_node(who) is may_change_connection


@pytest.mark.parametrize(
    ("flags", "grant", "allowed"),
    [
        (("MANAGEMENT",), [], True),
        (("MANAGEMENT",), ["MANAGEMENT"], True),
        (("MANAGEMENT",), ["GLOBAL_RO"], False),  # GLOBAL_* needs GLOBAL_RW
        (("MANAGEMENT",), ["SUPER"], False),  # not held
        (("MANAGEMENT", "GLOBAL_RW"), ["GLOBAL_RO"], True),  # GLOBAL_RW holds GLOBAL_RO
        (("MANAGEMENT", "GLOBAL_RW"), ["GLOBAL_RW", "MANAGEMENT"], True),
        (("MANAGEMENT", "GLOBAL_RO"), ["GLOBAL_RO"], False),  # held, but GLOBAL_* needs GLOBAL_RW
        (("SUPER",), ["SUPER", "GLOBAL_RO", "GLOBAL_RW", "MANAGEMENT"], True),
        (("GLOBAL_RW",), ["GLOBAL_RO"], True),  # may_grant alone; managing needs MANAGEMENT
    ],
)
def test_granting_flags(flags: tuple[str, ...], grant: list[str], allowed: bool) -> None:
    assert authz.may_grant(actor("g", flags=flags), grant) is allowed


def test_managing_users() -> None:
    mgmt = actor("m", flags=("MANAGEMENT",))
    assert authz.may_manage_user(mgmt, set())
    assert authz.may_manage_user(mgmt, {"MANAGEMENT"})
    assert not authz.may_manage_user(mgmt, {"SUPER"})  # no reset of a SUPER's password
    assert not authz.may_manage_user(actor("x", flags=("GLOBAL_RW",)), set())
    alice = User("u", "$argon2id$", ("g",))
    assert authz.may_set_password(actor("g"), alice, set(), old_password_ok=True)
    assert not authz.may_set_password(actor("g"), alice, set(), old_password_ok=False)
    bob = User("bob", "$argon2id$", ("g",))
    assert authz.may_set_password(mgmt, bob, set(), old_password_ok=False)
    assert not authz.may_set_password(actor("g"), bob, set(), old_password_ok=True)


def test_users_and_groups_visibility() -> None:
    me = User("u", "$argon2id$", ("g",))
    other = User("v", "$argon2id$", ("h",))
    assert authz.user_access(actor("g"), me) == R
    assert authz.user_access(actor("g"), other) == N
    # least privilege (docs/api.md, SPEC.md §4): GLOBAL_* read upstreams, checks and nodes, not people
    assert authz.user_access(actor("g", flags=("GLOBAL_RO",)), other) == N
    assert authz.user_access(actor("g", flags=("GLOBAL_RW",)), other) == N
    assert authz.user_access(actor("g", flags=("GLOBAL_RW",)), me) == R
    assert authz.user_access(actor("g", flags=("MANAGEMENT",)), other) == W
    assert authz.group_access(actor("g"), Group("g")) == R
    assert authz.group_access(actor("g"), Group("h")) == N
    assert authz.group_access(actor("g", flags=("GLOBAL_RO", "GLOBAL_RW")), Group("h")) == N
    assert authz.group_access(actor("g", flags=("SUPER",)), Group("h")) == W
    assert authz.may_see_management_nodes(actor("x", flags=("SUPER",)))
    assert not authz.may_see_management_nodes(actor("x", flags=("GLOBAL_RW", "MANAGEMENT")))


@pytest.mark.parametrize(
    ("who", "owner", "old_owner", "allowed"),
    [
        (actor("team-a"), "team-a", None, True),  # creating: one of your groups
        (actor("team-a"), "team-b", None, False),
        (actor("team-w"), "team-w", "team-a", False),  # an ACL WRITE holder: no takeover
        (actor("team-w", "team-b"), "team-b", "team-a", False),
        (actor("team-a", "team-b"), "team-b", "team-a", True),  # a member of the owner group
        (actor("team-a"), "team-b", "team-a", False),  # ... to one of its own groups only
        (actor("team-w"), "team-a", "team-a", True),  # unchanged
        (actor("x", flags=("GLOBAL_RW",)), "team-b", "team-a", True),
        (actor("x", flags=("SUPER",)), "team-b", "team-a", True),
        (actor("x", flags=("GLOBAL_RO", "MANAGEMENT")), "x", "team-a", False),
    ],
)
def test_owner_changes(who: Actor, owner: str, old_owner: str | None, allowed: bool) -> None:
    assert authz.may_set_owner(who, owner, old_owner) is allowed


def test_unknown_flags_are_left_to_the_schema() -> None:
    assert authz.may_grant(actor("x", flags=("SUPER",)), ["ROOT"])  # the schema answers 400
    assert not authz.may_grant(actor("x", flags=("MANAGEMENT",)), ["ROOT", "SUPER"])


def test_actor_of_unions_flags_of_existing_groups() -> None:
    groups = {"a": Group("a", ("GLOBAL_RO",)), "b": Group("b", ("MANAGEMENT",))}
    who = authz.actor_of(User("u", "$argon2id$", ("a", "b", "gone")), groups)
    assert who.flags == {"GLOBAL_RO", "MANAGEMENT"} and who.groups == {"a", "b", "gone"}

"""Who may do what (SPEC.md §4): pure functions of (the actor's groups, an object, an action).

No I/O here: handlers build an ``Actor`` from the desired state, call these, and turn the
answer into 404 (cannot read: the object is hidden, as if it did not exist), 403 (can read,
may not do this) or go ahead. tests/api/test_authz.py is the rule table.

Rules, a user's rights being the union over its groups:

- upstream (its nodes, checks, ACL): WRITE for the owner group, GLOBAL_RW, SUPER; else the ACL
  rules naming the actor's groups (the best of them; DENY alone gives nothing, and beats
  GLOBAL_RO); else READ with GLOBAL_RO; else nothing; its owner (and a check's) changes only
  by a member of the owner group (to one of its own groups), GLOBAL_RW or SUPER;
- check: WRITE for its owner, GLOBAL_RW, SUPER; READ for anyone who may read an upstream using
  it, or with GLOBAL_RO; putting another group's check on an upstream needs GLOBAL_RO;
- access node: WRITE for its owner, GLOBAL_RW, SUPER; READ for those and GLOBAL_RO; creating
  one, or changing ``connection``/``nginx``/``owner``/``listen_address``, needs SUPER (no name
  ever changes);
  adding (or removing) an upstream needs WRITE on the node and on the upstream;
- users and groups: MANAGEMENT or SUPER; anyone else reads only itself and its own groups
  (GLOBAL_RO and GLOBAL_RW are about upstreams, checks and access nodes); GLOBAL_* flags
  are granted or removed only with GLOBAL_RW or SUPER; nobody grants a flag they do not hold
  (SUPER holds every flag, GLOBAL_RW holds GLOBAL_RO); nobody manages a user who holds a flag
  they do not (else MANAGEMENT could reset a SUPER's password and log in as them);
- management nodes: SUPER.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum

from reconciler.manifest.model import AccessNode, Check, Group, Upstream, User

FLAGS = ("MANAGEMENT", "SUPER", "GLOBAL_RO", "GLOBAL_RW")
GLOBAL_FLAGS = frozenset({"GLOBAL_RO", "GLOBAL_RW"})
# AccessNode fields that decide which commands run where with the controller's credentials.
SUPER_ONLY_FIELDS = ("owner", "connection", "nginx", "listen_address")


class Access(IntEnum):
    NONE = 0  # hidden: 404
    READ = 1  # visible; writes are 403
    WRITE = 2


@dataclass(frozen=True)
class Actor:
    """An authenticated user as the rules see it: its name, groups and their flags (union)."""

    name: str
    groups: frozenset[str]
    flags: frozenset[str]

    @property
    def held(self) -> frozenset[str]:
        """The flags this actor may grant: SUPER holds every flag, GLOBAL_RW holds GLOBAL_RO."""
        if "SUPER" in self.flags:
            return frozenset(FLAGS)
        return self.flags | ({"GLOBAL_RO"} if "GLOBAL_RW" in self.flags else set())

    def has(self, *flags: str) -> bool:
        return bool(self.flags & set(flags))


def actor_of(user: User, groups: Mapping[str, Group]) -> Actor:
    """The Actor of ``user``: the union of its (existing) groups' flags."""
    flags = {flag for name in user.groups if name in groups for flag in groups[name].global_permissions}
    return Actor(user.name, frozenset(user.groups), frozenset(flags))


def group_flags(names: Iterable[str], groups: Mapping[str, Group]) -> frozenset[str]:
    return frozenset(flag for name in names if name in groups for flag in groups[name].global_permissions)


# --- upstreams and checks ---------------------------------------------------------------


def upstream_access(actor: Actor, upstream: Upstream) -> Access:
    if upstream.owner in actor.groups or actor.has("GLOBAL_RW", "SUPER"):
        return Access.WRITE
    rules = {rule.rule for rule in upstream.acl if rule.group_name in actor.groups}
    if "WRITE" in rules:
        return Access.WRITE
    if "READ" in rules:
        return Access.READ
    if "DENY" in rules:
        return Access.NONE
    return Access.READ if actor.has("GLOBAL_RO") else Access.NONE


def may_set_owner(actor: Actor, owner: str, old_owner: str | None) -> bool:
    """May ``actor`` make ``owner`` the owner group (``old_owner``: the current one; None when creating)?

    GLOBAL_RW and SUPER may; anyone else names one of its own groups, and changes an owner
    only as a member of the current owner group: an ACL WRITE rule grants work on an
    upstream, not its ownership.
    """
    if owner == old_owner or actor.has("GLOBAL_RW", "SUPER"):
        return True
    return owner in actor.groups and (old_owner is None or old_owner in actor.groups)


def check_access(actor: Actor, check: Check, upstreams: Iterable[Upstream]) -> Access:
    """``upstreams``: every upstream of the desired state (those using the check count)."""
    if check.owner in actor.groups or actor.has("GLOBAL_RW", "SUPER"):
        return Access.WRITE
    if actor.has("GLOBAL_RO"):
        return Access.READ
    using = (u for u in upstreams if check.name in u.checks)
    return Access.READ if any(upstream_access(actor, u) >= Access.READ for u in using) else Access.NONE


def may_use_check(actor: Actor, check: Check) -> bool:
    """May ``actor`` put ``check`` on an upstream? Its own group's check, or with GLOBAL_RO."""
    return check.owner in actor.groups or actor.has("GLOBAL_RO", "GLOBAL_RW", "SUPER")


# --- access nodes and management nodes ----------------------------------------------------


def access_node_access(actor: Actor, node: AccessNode) -> Access:
    if node.owner in actor.groups or actor.has("GLOBAL_RW", "SUPER"):
        return Access.WRITE
    return Access.READ if actor.has("GLOBAL_RO") else Access.NONE


def may_create_access_node(actor: Actor) -> bool:
    return actor.has("SUPER")


def may_change_access_node(actor: Actor, changed_fields: Iterable[str]) -> bool:
    """Given WRITE on the node: SUPER changes anything, others description and upstreams only."""
    return actor.has("SUPER") or not set(changed_fields) & set(SUPER_ONLY_FIELDS)


def may_see_management_nodes(actor: Actor) -> bool:
    return actor.has("SUPER")


# --- users and groups ----------------------------------------------------------------------


def may_manage(actor: Actor) -> bool:
    """May create, change and delete users and groups (within the flag rules below)."""
    return actor.has("MANAGEMENT", "SUPER")


def user_access(actor: Actor, user: User) -> Access:
    if may_manage(actor):
        return Access.WRITE
    return Access.READ if user.name == actor.name else Access.NONE


def group_access(actor: Actor, group: Group) -> Access:
    if may_manage(actor):
        return Access.WRITE
    return Access.READ if group.name in actor.groups else Access.NONE


def may_grant(actor: Actor, flags: Iterable[str]) -> bool:
    """May ``actor`` give (or take away) ``flags``: held by the actor, GLOBAL_* only with GLOBAL_RW.

    Names that are not flags are left to the schema (400 for everyone, SUPER too).
    """
    wanted = set(flags) & set(FLAGS)
    if not wanted:
        return True
    if wanted & GLOBAL_FLAGS and not actor.has("GLOBAL_RW", "SUPER"):
        return False
    return wanted <= actor.held


def may_manage_user(actor: Actor, target_flags: Iterable[str]) -> bool:
    """May ``actor`` change or delete a user whose groups hold ``target_flags``?"""
    return may_manage(actor) and set(target_flags) <= actor.held


def may_set_password(actor: Actor, user: User, target_flags: Iterable[str], old_password_ok: bool) -> bool:
    """A user sets its own password by giving the old one; MANAGEMENT resets another's."""
    if user.name == actor.name:
        return old_password_ok
    return may_manage_user(actor, target_flags)

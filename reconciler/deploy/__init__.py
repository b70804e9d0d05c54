"""Deploy: rendered files onto access nodes, one node (``apply_node``) or a fleet (``apply_fleet``).

Owns where things live on a node (``layout.py``), reading a node's facts in one round trip
(``facts.py``), the pure plan of one node (``plan.py``: ``plan_node``), the shell side of an
apply as pure functions (``scripts.py``), applying one node in SPEC.md §2's order
(``apply.py``), planning and applying across nodes with --limit/--forks/--serial
(``fleet.py``: ``plan_fleet``, ``apply_fleet``) and saved plans (``planfile.py``). Prints
nothing: the CLI reports. docs/apply.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reconciler.exports import lazy_exports

if TYPE_CHECKING:
    from reconciler.deploy.apply import apply_node
    from reconciler.deploy.fleet import apply_fleet, plan_fleet
    from reconciler.deploy.plan import plan_node

__all__ = ["apply_fleet", "apply_node", "plan_fleet", "plan_node"]

__getattr__ = lazy_exports(
    __name__,
    {
        "apply_fleet": "reconciler.deploy.fleet",
        "apply_node": "reconciler.deploy.apply",
        "plan_fleet": "reconciler.deploy.fleet",
        "plan_node": "reconciler.deploy.plan",
    },
)

"""Kernel -> Observed: read only what ipvland may own or must respect.

Links are read in ipvland's own namespace and in every named namespace (an owned device may have
been left anywhere by an earlier config). Addresses, routes and neighbors are read only where they
can matter: ipvland's own namespace, the namespaces the spec names, and those holding our devices.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ipvland import normalize
from ipvland.model import (
    MAIN_TABLE,
    Observed,
    ObservedAddress,
    ObservedLink,
    ObservedNeighbor,
    ObservedRoute,
    Spec,
)

if TYPE_CHECKING:
    from ipvland.kernel import Kernel


def _ours(link: ObservedLink) -> bool:
    return link.owned or link.leftover


def _host_tables(spec: Spec | None) -> frozenset[int] | None:
    """The route tables the spec uses in ipvland's own namespace (main always): there, only these
    are read whole, and ipvland's own routes wherever they are (Kernel.routes). A router or a
    Kubernetes node keeps its many routes there, in tables of its own. None: read every table."""
    if spec is None:
        return None
    routes = [r for p in spec.parents for r in p.routes]
    routes += [r for d in spec.devices if d.netns is None for r in d.routes]
    return frozenset({MAIN_TABLE, *(normalize.route_table(r.table) for r in routes)})


def observe(kernel: Kernel, spec: Spec | None = None, scope: frozenset[str | None] | None = None,
            links_everywhere: bool = False) -> Observed:
    """A snapshot of the kernel. With spec None, scan only where ipvland's own objects are.

    scope: read only these namespaces (and ipvland's own): a partial view, see Observed.scope.
    links_everywhere: with a scope, read the links of every namespace all the same (and nothing
    else out of scope): see Observed.links_everywhere.
    """
    namespaces = kernel.list_namespaces()
    if scope is not None:
        # A namespace in scope that does not exist (any more) stays in scope: its devices are then
        # known to be absent, and the plan creates the namespace and them.
        scope = frozenset({None, *scope})
    links = list(kernel.links(None))
    for ns in sorted(namespaces):
        if scope is None or ns in scope:
            links.extend(kernel.links(ns))
        elif links_everywhere:
            links.extend(kernel.links(ns, kind="ipvlan"))  # a port's members: nothing else is needed
    wanted = spec.namespaces & namespaces if spec is not None else frozenset()
    if scope is not None:
        wanted &= scope
    scanned: set[str | None] = {None, *wanted, *(link.netns for link in links if _ours(link)
                                                 and (scope is None or link.netns in scope))}
    addresses: list[ObservedAddress] = []
    routes: list[ObservedRoute] = []
    neighbors: list[ObservedNeighbor] = []
    try:
        for where in sorted(scanned, key=lambda n: (n is not None, n or "")):
            addresses.extend(kernel.addresses(where))
            routes.extend(kernel.routes(where, _host_tables(spec)) if where is None else kernel.routes(where))
            neighbors.extend(kernel.neighbors(where))
    finally:
        # Sockets stay open only in the namespaces the spec names: one left in another tool's
        # namespace (or one that left the spec) would keep it alive after `ip netns del`.
        kernel.retain(spec.namespaces if spec is not None else frozenset())
    return Observed(namespaces, tuple(links), tuple(addresses), tuple(routes), tuple(neighbors),
                    frozenset(scanned), scope, links_everywhere and scope is not None)

"""Kernel -> Observed: read only what ipvland may own or must respect.

Links are read in ipvland's own namespace and in every named namespace (an owned device may have
been left anywhere by an earlier config). Addresses, routes and neighbors are read only where they
can matter: ipvland's own namespace, the namespaces the spec names, and those holding our devices.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING

from ipvland import normalize
from ipvland.model import (
    MAIN_TABLE,
    Observed,
    ObservedAddress,
    ObservedLink,
    ObservedNeighbor,
    ObservedRoute,
    ObservedRule,
    Spec,
    is_path_netns,
)
from ipvland.netns import NETNS_DIR, is_namespace

if TYPE_CHECKING:
    from ipvland.kernel import Kernel


UDEV_DATA = "/run/udev/data"


def udev_path(ifindex: int) -> str | None:
    """udev's ID_PATH of a NIC (what systemd-networkd's Path= matches), from its database entry."""
    try:
        with open(os.path.join(UDEV_DATA, f"n{ifindex}"), encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("E:ID_PATH="):
                    return line[len("E:ID_PATH="):].strip() or None
    except OSError:
        return None
    return None


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _with_paths(named: frozenset[str], spec: Spec | None) -> frozenset[str]:
    """The named namespaces, plus the spec's namespaces by path that exist now (model.is_path_netns).
    A namespace that is both (`ln -s /proc/PID/ns/net /run/netns/NAME`) is read once, by its path:
    read twice, its devices would look like two sets, one of them not in the spec."""
    paths = {ns for ns in (spec.path_namespaces if spec is not None else ()) if is_namespace(ns)}
    if not paths:
        return named
    taken = {_identity(p) for p in paths}
    return frozenset({n for n in named if _identity(os.path.join(NETNS_DIR, n)) not in taken} | paths)


def _vanished(netns: str | None, error: Exception) -> bool:
    """The read failed because the namespace is gone: deleted (a container stopped, `ip netns del`)
    after the turn listed it (Kernel.one_listing), which is no error of the reconcile. Any errno:
    entering the empty file a gone mount leaves is EINVAL with CAP_DAC_OVERRIDE, EACCES without it
    (the shipped unit), ENOENT once the name is unlinked."""
    if netns is None or getattr(error, "errno", None) is None:
        return False
    return not is_namespace(netns if is_path_netns(netns) else os.path.join(NETNS_DIR, netns))


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


def _port_members(kernel: Kernel, spec: Spec | None, elsewhere: frozenset[str],
                  links: list[ObservedLink]) -> list[ObservedLink]:
    """Ipvlans out of view, read until every port of the spec shows one (Observed.ports_known):
    first in the namespaces where the spec puts that port's devices, then in all the others."""
    if spec is None:
        return []
    missing = {p.name for p in spec.parents if p.devices} - {link.parent for link in links if link.kind == "ipvlan"}
    likely = [d.netns for p in spec.parents if p.name in missing for d in p.devices if d.netns in elsewhere]
    found: list[ObservedLink] = []
    for ns in dict.fromkeys([*likely, *sorted(elsewhere)]):
        if not missing:
            break
        try:
            got = kernel.links(ns, kind="ipvlan")  # a port's members: nothing else is needed
        except Exception as e:
            if not _vanished(ns, e):
                raise
            continue  # deleted since the turn listed it
        found.extend(got)
        missing -= {link.parent for link in got}
    return found


def observe(kernel: Kernel, spec: Spec | None = None, scope: frozenset[str | None] | None = None,
            ports: bool = False) -> Observed:
    """A snapshot of the kernel. With spec None, scan only where ipvland's own objects are.

    scope: read only these namespaces (and ipvland's own): a partial view, see Observed.scope.
    Ipvland's own namespace has its links read always (the parents live there); its addresses,
    routes, neighbors and rules only when it is in the scope: a repair elsewhere did not change
    them, and the host of a router holds many (see Observed.scanned).
    ports: with a scope, also read enough ipvlans out of it to know every port's mode: see
    Observed.ports_known.
    """
    namespaces = _with_paths(kernel.list_namespaces(), spec)
    host_objects = scope is None or None in scope
    if scope is not None:
        # A namespace in scope that does not exist (any more) stays in scope: its devices are then
        # known to be absent, and the plan creates the namespace and them.
        scope = frozenset({None, *scope})
    links = list(kernel.links(None))
    if spec is not None and any(p.match and p.match.path for p in spec.parents):
        links = [replace(x, path=udev_path(x.index)) if x.kind is None else x for x in links]
    gone: set[str] = set()
    for ns in sorted(namespaces):
        if scope is None or ns in scope:
            try:
                links.extend(kernel.links(ns))
            except Exception as e:
                if not _vanished(ns, e):
                    raise
                gone.add(ns)  # deleted since it was listed: absent, as if listed after
    namespaces -= gone
    if scope is not None and ports:
        links.extend(_port_members(kernel, spec, namespaces - scope, links))
    wanted = spec.namespaces & namespaces if spec is not None else frozenset()
    if scope is not None:
        wanted &= scope
    scanned: set[str | None] = {*wanted, *(link.netns for link in links if _ours(link)
                                           and (scope is None or link.netns in scope))}
    if host_objects:
        scanned.add(None)
    else:
        scanned.discard(None)
    addresses: list[ObservedAddress] = []
    routes: list[ObservedRoute] = []
    neighbors: list[ObservedNeighbor] = []
    rules: list[ObservedRule] = []
    try:
        for where in sorted(scanned, key=lambda n: (n is not None, n or "")):
            try:
                got = (kernel.addresses(where),
                       kernel.routes(where, _host_tables(spec)) if where is None else kernel.routes(where),
                       kernel.neighbors(where), kernel.rules(where))
            except Exception as e:
                if where is None or not _vanished(where, e):
                    raise
                gone.add(where)
                continue
            addresses.extend(got[0])
            routes.extend(got[1])
            neighbors.extend(got[2])
            rules.extend(got[3])
    finally:
        # Sockets stay open only in the namespaces the spec names: one left in another tool's
        # namespace (or one that left the spec) would keep it alive after `ip netns del`.
        kernel.retain(spec.namespaces if spec is not None else frozenset())
    if gone:  # deleted meanwhile: absent, as if the turn had listed it after
        namespaces -= gone
        scanned -= gone
        links = [link for link in links if link.netns not in gone]
    forwarding = []
    for where in sorted({d.netns for d in spec.devices if d.ip_forward is not None} if spec else (),
                        key=lambda n: (n is not None, n or "")):
        if where in scanned:
            value = kernel.ip_forward(where)
            if value is not None:
                forwarding.append((where, value))
    return Observed(namespaces, tuple(links), tuple(addresses), tuple(routes), tuple(neighbors),
                    frozenset(scanned), scope, tuple(rules), tuple(forwarding),
                    ports_known=ports and scope is not None)

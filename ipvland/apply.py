"""Plan -> outcomes: carry out each change; one failing object never stops unrelated ones.

A change whose device could not be created (or whose namespace could not be made) is skipped, not
attempted: its error would only repeat the first one.

Writes are pipelined (Kernel.posting): each change's requests are sent under the change's index
without waiting for the kernel's answer, and one settle() at the end maps every refusal back to its
change by sequence number. Creating a namespace or a device (with its rename, and the removal of the
temporary device when the rename fails) is synchronous, so the skip rule above still sees a failed
create before its dependents. The outcomes are logged in plan order once all are known.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ipvland.model import (
    OWNER_ALIAS,
    AddressAdd,
    AddressDelete,
    Change,
    DeviceRef,
    LinkCreate,
    LinkDelete,
    LinkMtuSet,
    LinkStateSet,
    LinkSysctlSet,
    NamespaceCreate,
    NamespaceSysctlSet,
    NeighborDelete,
    NeighborSet,
    Plan,
    PortModeSet,
    RouteDelete,
    RouteSet,
    RuleAdd,
    RuleDelete,
)

if TYPE_CHECKING:
    from ipvland.kernel import Kernel

log = logging.getLogger("ipvland.apply")

SYNCHRONOUS = (NamespaceCreate, LinkCreate)  # what comes after them needs them done


@dataclass(frozen=True)
class Outcome:
    """One change as carried out."""

    change: Change
    error: str | None = None
    skipped: bool = False  # not attempted: what it depends on failed

    @property
    def ok(self) -> bool:
        return self.error is None and not self.skipped

    def describe(self) -> str:
        line = self.change.describe()
        if self.skipped:
            return f"{line}: skipped: {self.error}"
        return f"{line}: FAILED: {self.error}" if self.error else line


def _create_link(kernel: Kernel, change: LinkCreate) -> None:
    d = change.spec
    kernel.create_ipvlan(d.parent, change.temp_name, change.mode, change.flags, d.mtu, d.netns)
    try:
        kernel.rename_link(d.netns, change.temp_name, d.name, OWNER_ALIAS)
    except Exception:
        # Leave no temporary device behind; the planner would also remove it on the next run.
        try:
            kernel.delete_link(d.netns, change.temp_name)
        except Exception as cleanup:  # the first error is the one to report
            log.warning("could not remove temporary device %s: %s", change.temp_name, cleanup)
        raise


def execute(kernel: Kernel, change: Change) -> None:
    """Send the netlink requests for one change."""
    match change:
        case NamespaceCreate(name=name):
            kernel.create_namespace(name)
        case LinkCreate():
            _create_link(kernel, change)
        case LinkDelete(netns=ns, name=name):
            kernel.delete_link(ns, name)
        case PortModeSet(via=(ns, name), mode=mode, flags=flags):
            kernel.set_port_mode(ns, name, mode, flags)
        case LinkMtuSet(netns=ns, name=name, new=mtu):
            kernel.set_mtu(ns, name, mtu)
        case LinkStateSet(netns=ns, name=name, up=up):
            kernel.set_up(ns, name, up)
        case LinkSysctlSet(netns=ns, name=name, key=key, new=value):
            kernel.set_sysctl(ns, name, key, value)
        case AddressAdd(netns=ns, dev=dev, address=address, options=options, replace=replace):
            kernel.add_address(ns, dev, address, options, replace)
        case AddressDelete(netns=ns, dev=dev, address=address, peer=peer):
            kernel.delete_address(ns, dev, address, peer)
        case RouteSet(netns=ns, dev=dev, route=route, replace=replace):
            kernel.set_route(ns, dev, route, replace)
        case RouteDelete(netns=ns, dev=dev, route=route):
            kernel.delete_route(ns, dev, route)
        case NeighborSet(netns=ns, dev=dev, neighbor=neighbor, replace=replace):
            kernel.set_neighbor(ns, dev, neighbor, replace)
        case NeighborDelete(netns=ns, dev=dev, neighbor=neighbor):
            kernel.delete_neighbor(ns, dev, neighbor)
        case NamespaceSysctlSet(netns=ns, new=value):
            kernel.set_ip_forward(ns, value)
        case RuleAdd(rule=rule):
            kernel.add_rule(rule)
        case RuleDelete(rule=rule):
            kernel.delete_rule(rule)


def apply(kernel: Kernel, plan: Plan) -> tuple[Outcome, ...]:
    failed_devices: dict[DeviceRef, str] = {}
    failed_namespaces: dict[str, str] = {}
    outcomes: list[Outcome] = []
    for i, change in enumerate(plan.changes):
        ref = change.device
        blocker = None
        if ref is not None:
            blocker = failed_devices.get(ref) or (failed_namespaces.get(ref[0]) if ref[0] else None)
        if blocker is not None:
            outcomes.append(Outcome(change, blocker, skipped=True))
            continue
        try:
            with contextlib.nullcontext() if isinstance(change, SYNCHRONOUS) else kernel.posting(i):
                execute(kernel, change)
        except Exception as e:  # KernelError carries the kernel's reason; anything else is ours
            outcomes.append(Outcome(change, str(e)))
            if isinstance(change, LinkCreate):
                failed_devices[change.device] = f"link {change.spec.name} was not created"
            elif isinstance(change, NamespaceCreate):
                failed_namespaces[change.name] = f"netns {change.name} was not created"
        else:
            outcomes.append(Outcome(change))
    for i, error in kernel.settle():  # posted under the change's index
        if outcomes[i].ok:  # a change's first refusal is its error
            outcomes[i] = Outcome(outcomes[i].change, str(error))
    for outcome in outcomes:
        if outcome.skipped:
            log.warning("%s", outcome.describe())
        elif outcome.error:
            log.error("%s", outcome.describe())
        else:
            log.info("%s", outcome.change.describe())
    return tuple(outcomes)

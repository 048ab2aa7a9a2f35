"""`show` prints live state as a config: the document must load, and plan to nothing against the same state."""

from __future__ import annotations

import ipaddress

import pytest
import yaml

from ipvland import spec as spec_mod
from ipvland.model import RT_PROTO, Neighbor, ObservedAddress, ObservedLink, ObservedNeighbor, ObservedRoute, Route
from ipvland.plan import plan
from ipvland.show import to_document
from tests.unit.test_plan import MAC, converged_web, ipvlan

IF = ipaddress.ip_interface


def observed_with_extras():  # type: ignore[no-untyped-def]
    base = converged_web()
    return type(base)(
        namespaces=base.namespaces,
        links=(*base.links, ipvlan("app0", 8, None, mtu=9000, up=False), ipvlan("theirs", 9, owned=False),
               ObservedLink(None, 3, "eth1", None, 1500, True, "02:00:00:00:00:02")),
        addresses=(*base.addresses, ObservedAddress(None, 8, IF("2001:db8::8/64"))),
        routes=(*base.routes,
                ObservedRoute("web", 7, Route(ipaddress.ip_network("::/0"), None, 1024), RT_PROTO),
                ObservedRoute(None, 3, Route(ipaddress.ip_network("198.51.100.7/32"), ipaddress.ip_address("192.0.2.1"),
                                             50, 100), RT_PROTO)),
        neighbors=(ObservedNeighbor(None, 3, Neighbor(ipaddress.ip_address("192.0.2.50"), MAC), True, RT_PROTO),),
        scanned=base.scanned,
    )


def test_show_document_loads_and_plans_nothing() -> None:
    observed = observed_with_extras()
    doc = to_document(observed)
    assert set(doc["parents"]) == {"eth0", "eth1"}
    assert "theirs" not in doc["parents"]["eth0"]["devices"]
    assert doc["parents"]["eth0"]["devices"]["web0"]["routes"] == [{"to": "default"}, {"to": "::/0"}]
    spec = spec_mod.loads(yaml.safe_dump(doc), "<show>")
    result = plan(spec, observed)
    assert result.empty, [c.describe() for c in result.changes]
    assert not result.conflicts


def test_show_all_adds_foreign_ipvlans_ready_to_adopt() -> None:
    doc = to_document(observed_with_extras(), include_foreign=True)
    assert "theirs" in doc["parents"]["eth0"]["devices"]
    spec_mod.loads(yaml.safe_dump(doc), "<show --all>")  # still a valid config


def test_loads_reports_errors_with_the_source_name() -> None:
    with pytest.raises(spec_mod.SpecError) as e:
        spec_mod.loads("version: 1\nparents: {eth0: {mode: l4}}\n", "<rollback>")
    assert str(e.value.errors[0]).startswith("<rollback>:2:")

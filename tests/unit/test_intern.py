"""The spec and the kernel's decoding share one object per interface address (model.interned), so
the planner's lookups are identity checks (issue 13: ipaddress's __eq__ was a tenth of a resync's
plan at N=1000). Pure: the decoder is fed the bytes a dump carries."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from ipvland import kernel as kmod
from ipvland import model
from ipvland import spec as spec_mod

DOC = """
version: 1
parents:
  eth9:
    mode: l3s
    devices:
      web0:
        addresses: [192.0.2.77/24, 2001:db8:77::5/64]
"""


def test_an_address_of_the_spec_and_the_same_one_decoded_are_one_object() -> None:
    device = spec_mod.loads(DOC, "config.yaml").devices[0]
    v4, v6 = device.addresses
    decoded4 = kmod._interface(socket.AF_INET, ipaddress.IPv4Address("192.0.2.77").packed, 24)
    decoded6 = kmod._interface(socket.AF_INET6, ipaddress.IPv6Address("2001:db8:77::5").packed, 64)
    assert decoded4 is v4 and decoded6 is v6
    other = kmod._interface(socket.AF_INET, ipaddress.IPv4Address("192.0.2.77").packed, 25)
    assert other is not v4 and other != v4  # another prefix is another address


def test_past_its_bound_the_table_starts_again_and_equality_still_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model, "_INTERN_MAX", 4)
    monkeypatch.setattr(model, "_INTERNED", {})
    first = model.interned(ipaddress.ip_interface("198.51.100.1/24"))
    for i in range(2, 8):
        model.interned(ipaddress.ip_interface(f"198.51.100.{i}/24"))
    again = model.interned(ipaddress.ip_interface("198.51.100.1/24"))
    assert again == first and len(model._INTERNED) <= 4

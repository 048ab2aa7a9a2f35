"""Kernels that drop what ipvland marks: detect it, and keep a record instead.

ipvland knows what it owns from marks the kernel keeps (README "Ownership"): the interface alias,
the route protocol, the neighbor protocol (NDA_PROTOCOL), and it sets the ipvlan flags. An older
kernel drops an attribute it does not know without an error: NDA_PROTOCOL came with Linux 5.0
(backported to RHEL 8.7's 4.18, not to every RHEL 8 minor), IFLA_IPVLAN_FLAGS with 4.15. On such a
kernel every neighbor entry ipvland installs reads back as foreign: a permanent conflict, and
entries it removes from the spec are never deleted.

`detect()` writes each mark in a throwaway network namespace (a thread that unshares its own, with
only `lo`, gone when the thread ends) and reads it back. When the neighbor protocol does not stick
(or the fallback is forced, `IPVLAND_FORCE_RECORD=1`, for tests), `open_kernel()` returns a
`RecordingKernel`: the neighbor entries ipvland installs are kept in `<state dir>/owned.json`
(written atomically, 0640 like the status), and an entry the kernel reports at the same
(namespace, device, address) counts as ipvland's, exactly as the protocol would say. Entries the
kernel no longer has are dropped from the record at the next read, so an entry another tool adds
later at that place is foreign again, as with the kernel's mark. The other marks exist on every
kernel ipvland supports; they are still checked, and one that does not stick is reported (in the
log and the status), since a record cannot stand in for ipvlan flags.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import fcntl
import ipaddress
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ipvland import status
from ipvland.model import OWNER_ALIAS, RT_PROTO, Flag, Mode, Neighbor, ObservedNeighbor, Route

log = logging.getLogger("ipvland.marks")

RECORD_FILE = "owned.json"
FORCE_ENV = "IPVLAND_FORCE_RECORD"
NEIGHBOR, ROUTE, ALIAS, FLAGS = "neighbor protocol", "route protocol", "interface alias", "ipvlan flags"
_CLONE_NEWNET = 0x40000000
_PROBE_NET = ipaddress.ip_network("198.18.255.0/24")  # benchmarking range, in a namespace of its own
_PROBE_NEIGHBOR = Neighbor(ipaddress.ip_address("198.18.255.1"), "02:00:00:00:00:01")

Detected = dict[str, bool | None]  # marker -> sticks (None: could not be checked)
_detected: Detected | None = None
unchecked: dict[str, str] = {}  # marker -> why it could not be checked


def _check(what: str, fn: Callable[[], bool], out: Detected) -> None:
    try:
        out[what] = fn()
    except Exception as e:  # a refused probe says nothing about the mark
        log.debug("cannot check the %s: %s", what, e)
        unchecked[what] = str(e)
        out[what] = None


def _probe_here(out: Detected) -> None:
    """On this thread, already in a throwaway namespace: write each mark and read it back."""
    from ipvland.kernel import Kernel

    with Kernel() as k:
        k.links(None)
        k.set_up(None, "lo", True)

        def alias() -> bool:
            k.set_alias(None, "lo", OWNER_ALIAS)
            return any(link.name == "lo" and link.alias == OWNER_ALIAS for link in k.links(None))

        def route() -> bool:
            k.set_route(None, "lo", Route(_PROBE_NET))
            return any(r.route.to == _PROBE_NET and r.protocol == RT_PROTO for r in k.routes(None))

        def neighbor() -> bool:
            k.set_neighbor(None, "lo", _PROBE_NEIGHBOR)
            lo = k.ifindex(None, "lo")
            entries = [n for n in k.neighbors(None) if n.ifindex == lo and n.neighbor.lladdr == _PROBE_NEIGHBOR.lladdr]
            if not entries:
                raise LookupError("the probe entry did not appear")
            return any(n.protocol == RT_PROTO for n in entries)

        def flags() -> bool:
            _veth(k)
            k.create_ipvlan("ipvprobe0", "ipvprobe1", Mode.L2, Flag.PRIVATE)
            return any(link.name == "ipvprobe1" and link.flags == Flag.PRIVATE for link in k.links(None))

        for what, fn in ((ALIAS, alias), (ROUTE, route), (NEIGHBOR, neighbor), (FLAGS, flags)):
            _check(what, fn, out)


def _veth(k: Any) -> None:
    """A veth pair ipvprobe0/ipvprobeP: an Ethernet device for the ipvlan flags probe."""
    k.create_veth("ipvprobe0", "ipvprobeP")


def detect() -> Detected:
    """Which marks this kernel keeps, checked once per process in a throwaway network namespace."""
    global _detected
    if _detected is not None:
        return _detected
    out: Detected = {}

    def work() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(_CLONE_NEWNET) != 0:  # this thread only: the process stays where it is
            err = ctypes.get_errno()
            log.debug("cannot check marks: unshare: %s", os.strerror(err))
            out.update(dict.fromkeys((ALIAS, ROUTE, NEIGHBOR, FLAGS)))
            unchecked.update(dict.fromkeys(out, f"unshare: {os.strerror(err)}"))
            return
        _probe_here(out)

    t = threading.Thread(target=work, name="ipvland-marks")
    t.start()
    t.join()
    _detected = out
    return out


def forced() -> bool:
    return os.environ.get(FORCE_ENV) == "1"


def missing(detected: Detected | None = None) -> list[str]:
    """The marks this kernel drops (plus, when forced, the neighbor protocol), for log and status."""
    found = detected if detected is not None else (_detected or {})
    out = [m for m, sticks in found.items() if sticks is False]
    if forced() and NEIGHBOR not in out:
        out.append(NEIGHBOR)
    return sorted(out)


def report() -> dict[str, Any]:
    """For the status file: what was checked, what is missing, and whether the record stands in."""
    return {"checked": dict(_detected or {}), "missing": missing(), "record": NEIGHBOR in missing()}


# ---------------------------------------------------------------- the record


Key = tuple[str | None, int, str]  # (namespace, ifindex, address)


class Record:
    """The neighbor entries ipvland installed, in <state dir>/owned.json: read-modify-write under a
    flock, replaced atomically (a reader sees the old file or the new one)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / RECORD_FILE
        self.state_dir = state_dir

    def read(self) -> set[Key]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return set()
        except (OSError, ValueError) as e:
            log.warning("ignoring %s: %s", self.path, e)
            return set()
        return {(ns, int(index), str(addr)) for ns, index, addr in data.get("neighbors", [])}

    @contextlib.contextmanager
    def update(self) -> Iterator[set[Key]]:
        """The record to change in place; written back when the block ends."""
        if not self.state_dir.is_dir():
            status.prepare_dir(self.state_dir)
        fd = os.open(self.state_dir / (RECORD_FILE + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     status.FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            keys = self.read()
            before = set(keys)
            yield keys
            if keys != before:
                self._write(keys)
        finally:
            os.close(fd)

    def _write(self, keys: set[Key]) -> None:
        rows = sorted(([ns, index, addr] for ns, index, addr in keys), key=lambda r: (r[0] or "", r[1], r[2]))
        data = json.dumps({"schema": 1, "neighbors": rows}, indent=1).encode() + b"\n"
        fd, tmp = tempfile.mkstemp(prefix=".owned.", suffix=".tmp", dir=self.state_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                status.restrict(f.fileno(), status.FILE_MODE)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


class RecordingKernel:
    """A Kernel whose neighbor ownership comes from the Record instead of NDA_PROTOCOL.

    `strip`: ignore the protocol the kernel reports (what an older kernel would show), so that a
    kernel that keeps it can test the fallback. Everything else is the wrapped Kernel's.
    """

    def __init__(self, kernel: Any, record: Record, strip: bool = False) -> None:
        self._kernel = kernel
        self.record = record
        self.strip = strip

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kernel, name)

    def __enter__(self) -> RecordingKernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self._kernel.close()

    @contextlib.contextmanager
    def posting(self, tag: int) -> Iterator[None]:
        """No pipelining here: the record must follow what the kernel did, so every write is waited
        for (a posted add refused later would be recorded as ipvland's: review of issue 13)."""
        yield

    def neighbors(self, netns: str | None) -> list[ObservedNeighbor]:
        seen = self._kernel.neighbors(netns)
        with self.record.update() as keys:
            present = {(netns, n.ifindex, str(n.neighbor.address)) for n in seen}
            keys -= {k for k in keys if k[0] == netns and k not in present}  # gone: no longer ours
            out = []
            for n in seen:
                protocol = None if self.strip and n.protocol == RT_PROTO else n.protocol
                if (netns, n.ifindex, str(n.neighbor.address)) in keys:
                    protocol = RT_PROTO
                out.append(dataclasses.replace(n, protocol=protocol))
        return out

    def set_neighbor(self, netns: str | None, dev: str, neighbor: Neighbor, replace: bool = False) -> None:
        self._kernel.set_neighbor(netns, dev, neighbor, replace)
        with self.record.update() as keys:
            keys.add((netns, self._kernel.ifindex(netns, dev), str(neighbor.address)))

    def delete_neighbor(self, netns: str | None, dev: str, neighbor: Neighbor) -> None:
        index = self._kernel.ifindex(netns, dev)
        self._kernel.delete_neighbor(netns, dev, neighbor)
        with self.record.update() as keys:
            keys.discard((netns, index, str(neighbor.address)))


    def delete_link(self, netns: str | None, name: str) -> None:
        try:
            index: int | None = self._kernel.ifindex(netns, name)
        except Exception:  # the delete says why, in the plain Kernel's words
            index = None
        self._kernel.delete_link(netns, name)
        with self.record.update() as keys:  # its entries went with it
            keys -= {k for k in keys if k[:2] == (netns, index)}


def open_kernel(state_dir: Path) -> Any:
    """A Kernel for a reconcile: plain when the kernel keeps every mark, else a RecordingKernel.

    Says once per process, in the log, which marks this kernel drops.
    """
    from ipvland.kernel import Kernel

    first = _detected is None
    detected = detect()
    gone = missing(detected)
    if first and gone:
        log.warning("this kernel drops the %s; %s", ", ".join(gone),
                    f"ipvland records its neighbor entries in {state_dir / RECORD_FILE}" if NEIGHBOR in gone
                    else "ipvland cannot stand in for it")
    kernel = Kernel()
    if NEIGHBOR in gone:
        return RecordingKernel(kernel, Record(state_dir), strip=forced())
    return kernel

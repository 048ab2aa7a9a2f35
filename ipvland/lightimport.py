"""Import pyroute2's netlink message classes without pyroute2's package __init__.

ipvland uses pyroute2 only for its rtnetlink message classes (ifinfmsg, ifaddrmsg, ndmsg, rtmsg and
their NLAs); sockets, dumps and writes are ipvland's own. pyroute2's `__init__` imports every
subsystem it has (NDB, IPDB, conntrack, tc, nftables, wireless, ...): 160 modules and 0.25 s on a
fast host, 5 s per process in the emulated test VM, and every `ipvland` command pays it. Installed
before the first pyroute2 import (by ipvland/__init__.py), a stand-in package module lets
`pyroute2.netlink.*` load on their own (27 modules, 0.05 s). Anything asked of the package itself
(`from pyroute2 import IPRoute`, `pyroute2.__version__`) runs the real `__init__` first, in the same
module, so other code in the process sees pyroute2 exactly as it is.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from types import ModuleType


def install() -> None:
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None:
        return  # not installed: the real import fails later with its own message
    loader = spec.loader
    module = importlib.util.module_from_spec(spec)
    lock = threading.RLock()
    loading = threading.local()

    def load_whole_package(name: str) -> object:  # PEP 562: called only for names not yet there
        if not name.startswith("__") and importlib.util.find_spec(f"pyroute2.{name}") is not None:
            return importlib.import_module(f"pyroute2.{name}")  # `from pyroute2 import config`
        with lock:  # one thread runs the real __init__; the others wait here until it is whole
            if getattr(loading, "now", False):  # the real __init__ asking for a name it has not set yet
                raise AttributeError(f"partially initialized module 'pyroute2' has no attribute {name!r}")
            if "__getattr__" in vars(module):
                loading.now = True
                try:
                    loader.exec_module(module)
                except BaseException:
                    sys.modules.pop("pyroute2", None)  # no half-built package: the next import starts over
                    raise
                finally:
                    loading.now = False
                del module.__getattr__  # whole: from now on a plain module
        return getattr(module, name)

    module.__getattr__ = load_whole_package  # type: ignore[method-assign]
    sys.modules["pyroute2"] = module


def is_light(module: ModuleType) -> bool:
    """True while the stand-in has not run pyroute2's own __init__ (tests)."""
    return "__getattr__" in vars(module)

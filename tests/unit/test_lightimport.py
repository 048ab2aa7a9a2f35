"""ipvland loads pyroute2's message classes without pyroute2's whole package (ipvland/lightimport.py).

Each case runs in a fresh interpreter: this one has imported pyroute2 long ago.
"""

from __future__ import annotations

import subprocess
import sys


def run(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return r.stdout.strip()


def test_ipvlands_modules_load_only_the_message_classes() -> None:
    out = run("import sys, ipvland.cli, ipvland.daemon, ipvland.kernel\n"
              "print(sorted(m for m in sys.modules if m.startswith(('pyroute2.iproute', 'pyroute2.ndb', "
              "'pyroute2.ipdb', 'pyroute2.netlink.rtnl.tcmsg'))))")
    assert out == "[]"  # no sockets, NDB, IPDB, nor the tc module that warns under ProcSubset=pid


def test_the_package_itself_still_works_for_anyone_else_in_the_process() -> None:
    out = run("import ipvland.kernel, pyroute2\n"
              "from ipvland.lightimport import is_light\n"
              "before = is_light(pyroute2)\n"
              "from pyroute2 import IPRoute\n"
              "from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg\n"
              "print(before, is_light(pyroute2), IPRoute.__name__, pyroute2.__version__ != 'unknown')")
    assert out == "True False IPRoute True"


def test_regression_the_package_asked_for_by_two_threads_at_once_is_whole_for_both() -> None:
    # Review finding: one thread asked for pyroute2.IPRoute while another ran `from pyroute2 import NDB`;
    # the second saw the package half-built (ImportError), and `__version__` was refused outright.
    out = run("import threading, ipvland.kernel, pyroute2\n"
              "errors = []\n"
              "def use(code):\n"
              "    try:\n"
              "        exec(code, {'pyroute2': pyroute2})\n"
              "    except Exception as e:\n"
              "        errors.append(repr(e))\n"
              "threads = [threading.Thread(target=use, args=(c,)) for c in\n"
              "           ('pyroute2.IPRoute', 'from pyroute2 import NDB', 'pyroute2.__version__') * 3]\n"
              "[t.start() for t in threads]; [t.join() for t in threads]\n"
              "print(errors, pyroute2.__version__ != 'unknown')")
    assert out == "[] True"

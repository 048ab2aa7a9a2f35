"""ipvland: keeps a host's IPVLAN networking equal to a YAML file."""

from ipvland import lightimport

__version__ = "0.1.0"

lightimport.install()  # before anything imports pyroute2 (see there)

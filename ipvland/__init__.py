"""ipvland: keeps a host's IPVLAN networking equal to a YAML file."""

__version__ = "0.1.0"

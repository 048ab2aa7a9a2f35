#!/bin/sh
# At every boot, before ipvland and networkd: eth1 (the "NIC", a veth) and the peer host behind it.
set -eu
# Not ipvlan: on a real host nothing loads it before ipvland, whose first create must autoload it
# from inside its sandbox (ProtectKernelModules=yes).
modprobe veth
ip netns add peer 2>/dev/null || true
# fixed MACs: a MAC change flushes permanent neighbor entries
ip link add eth1 address 02:00:00:00:0a:01 type veth peer name eth1p address 02:00:00:00:0a:02 netns peer
ip link set eth1 up
ip -n peer link set lo up
ip -n peer link set eth1p up
ip -n peer addr add 192.0.2.1/24 dev eth1p
# L3S answers no ARP: the peer reaches the ipvlans through permanent entries for eth1's MAC
for a in 192.0.2.10 192.0.2.11 192.0.2.20 192.0.2.21; do  # .2x: the pod's (hosttest.py)
    ip -n peer neigh replace "$a" lladdr 02:00:00:00:0a:01 dev eth1p nud permanent
done
echo HOSTIMAGE-UP >/dev/ttyS0

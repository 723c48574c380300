#!/usr/bin/env bash
# Installs what the herald-jepsen harness needs on a Debian/Ubuntu machine:
# iproute2 (ip netns, veth, bridge), iptables (partitions), faketime
# (libfaketimeMT for the clock nemesis). Idempotent: installs only what is
# missing, and does nothing when everything is there. Needs root.
set -euo pipefail

need=()
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || need+=(iproute2)
command -v iptables-restore >/dev/null 2>&1 || [ -x /usr/sbin/iptables-restore ] || need+=(iptables)
ls /usr/lib/*-linux-gnu/faketime/libfaketimeMT.so.1 >/dev/null 2>&1 || need+=(faketime)

if [ ${#need[@]} -eq 0 ]; then
  echo "jepsen/setup.sh: iproute2, iptables and faketime are present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "jepsen/setup.sh: need root to install: ${need[*]}" >&2
  exit 1
fi
echo "jepsen/setup.sh: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}"

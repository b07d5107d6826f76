#!/usr/bin/env bash
# The benchmark's own install step: the Debian packages its contenders and
# probes call, installed with apt-get only when missing. bench/run.py runs it
# first (skip with --no-install); run it by hand as root if you prefer.
set -euo pipefail
PKGS=(keepalived resource-agents iputils-arping libndp-tools tcpdump iproute2 gcc)
missing=()
for p in "${PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "bench: installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# --no-install-recommends: resource-agents otherwise pulls in a large tree;
# the keepalived package must not start a service on the host (policy-rc.d).
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; made_policy=1
fi
trap '[ "$made_policy" = 1 ] && rm -f "$policy"' EXIT
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

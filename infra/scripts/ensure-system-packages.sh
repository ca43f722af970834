#!/usr/bin/env bash
# What the tests need from Debian: Chromium (headless UI tests) and PostgreSQL's server binaries (the Postgres
# tests start their own cluster in a temporary folder). Installed where missing; root only, registries only.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != "0" ]; then
  echo "missing ${need[*]} and this is not root: the tests that need them are skipped (install Debian's ${need[*]})" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The server package's own cluster and service are not used: policy-rc.d keeps the install from starting it.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y -qq "${need[@]}" >/dev/null
command -v chromium
compgen -G "/usr/lib/postgresql/*/bin/initdb"

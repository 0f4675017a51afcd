#!/usr/bin/env bash
# Install what the tests drive besides Python packages, when missing: wrk (HTTP load), h2load
# (nghttp2-client: gRPC load), and Debian's prometheus (the e2e tier's real Prometheus, and
# promtool for the alert rules' unit tests).
# Debian/Ubuntu only; uses sudo when not root. Installing never starts Prometheus: the package's
# service is refused through policy-rc.d while apt runs (and containers have no systemd).
set -euo pipefail
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || missing+=(prometheus)
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "install ${missing[*]} with your package manager (wrk; h2load; prometheus with promtool)" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod 755 "$policy"
  trap '$SUDO rm -f "$policy"' EXIT
fi
$SUDO apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
  || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}"; }
command -v wrk >/dev/null && command -v h2load >/dev/null && command -v prometheus >/dev/null \
  && command -v promtool >/dev/null

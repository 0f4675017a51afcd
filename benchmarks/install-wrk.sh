#!/usr/bin/env bash
# Install wrk (the load generator of the benchmarks and the overload test) if it is missing.
# Debian/Ubuntu: from the distribution's packages; uses sudo when not root.
set -euo pipefail
command -v wrk >/dev/null && exit 0
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
if command -v apt-get >/dev/null; then
  $SUDO apt-get install -y -qq wrk >/dev/null 2>&1 || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk; }
elif command -v brew >/dev/null; then
  brew install wrk
else
  echo "install wrk with your package manager (https://github.com/wg/wrk)" >&2
  exit 1
fi
command -v wrk >/dev/null

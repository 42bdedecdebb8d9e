#!/usr/bin/env bash
# CI step (called by .ci/run before `make test`): install Azurite from npm and start it on 127.0.0.1.
# The tests find it through .azurite/azurite.pid and the port, and build the connection string themselves
# from the installed package, so nothing has to be exported here.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v npm >/dev/null; then
  # Debian/Ubuntu runners: node and npm from the distribution are enough for Azurite 3.
  if command -v apt-get >/dev/null; then
    SUDO=""; [[ "$(id -u)" == 0 ]] || SUDO=sudo
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "ci-setup-azurite: npm is missing and apt-get is not available" >&2
    exit 1
  fi
fi
scripts/azurite-up.sh

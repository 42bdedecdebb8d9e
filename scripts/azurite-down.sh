#!/usr/bin/env bash
# Stop the Azurite emulator started by scripts/azurite-up.sh (by its pid file, nothing else).
# `--purge` also deletes the emulator's stored blobs (.azurite/data).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
AZURITE_DIR="${AZURITE_DIR:-$REPO/.azurite}"
PID_FILE="$AZURITE_DIR/azurite.pid"

if [[ -f "$PID_FILE" ]]; then
  PID="$(cat "$PID_FILE")"
  if kill -0 "$PID" 2>/dev/null; then
    kill "$PID"
    for _ in $(seq 1 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    echo "azurite-down: stopped pid $PID" >&2
  fi
  rm -f "$PID_FILE"
else
  echo "azurite-down: not running (no $PID_FILE)" >&2
fi
if [[ "${1:-}" == "--purge" ]]; then
  rm -rf "$AZURITE_DIR/data"
fi

#!/usr/bin/env bash
# Start the Azurite blob emulator on 127.0.0.1 for local and CI runs of the Azure storage tests.
#
# Installs Azurite from npm into .azurite/ (gitignored) on first use, then runs azurite-blob in the
# background with its data, log and pid file under .azurite/. Prints the environment a Snakemake run
# needs; `eval "$(scripts/azurite-up.sh --env)"` exports it into the calling shell.
#
# The account key is Azurite's published development key. It is read from the installed package at run
# time so that no key is ever written into this repository.
#
# Environment: AZURITE_DIR (default <repo>/.azurite), AZURITE_BLOB_PORT (default 10000),
#              AZURITE_VERSION (default 3.37.0).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
AZURITE_DIR="${AZURITE_DIR:-$REPO/.azurite}"
AZURITE_BLOB_PORT="${AZURITE_BLOB_PORT:-10000}"
AZURITE_VERSION="${AZURITE_VERSION:-3.37.0}"
PRINT_ENV_ONLY=0
[[ "${1:-}" == "--env" ]] && PRINT_ENV_ONLY=1

say() { echo "azurite-up: $*" >&2; }

install_azurite() {
  if [[ -x "$AZURITE_DIR/node_modules/.bin/azurite-blob" ]]; then
    return
  fi
  command -v npm >/dev/null || { say "npm is required (apt-get install nodejs npm)"; exit 1; }
  say "installing azurite@$AZURITE_VERSION into $AZURITE_DIR (about 30 s)"
  mkdir -p "$AZURITE_DIR"
  npm install --prefix "$AZURITE_DIR" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >&2
}

# The development account key ships inside the Azurite package (constant EMULATOR_ACCOUNT_KEY_STR).
development_account_key() {
  grep -rhoE 'EMULATOR_ACCOUNT_KEY_STR = "[^"]+"' "$AZURITE_DIR/node_modules/azurite/dist" 2>/dev/null \
    | head -n1 | sed -E 's/.*"([^"]+)"/\1/'
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$AZURITE_BLOB_PORT") 2>/dev/null; }

install_azurite
PID_FILE="$AZURITE_DIR/azurite.pid"
if [[ -f "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null && port_open; then
  say "already running (pid $(cat "$PID_FILE"), port $AZURITE_BLOB_PORT)"
else
  if port_open; then
    say "port $AZURITE_BLOB_PORT is taken by another process; set AZURITE_BLOB_PORT"; exit 1
  fi
  mkdir -p "$AZURITE_DIR/data"
  # --disableTelemetry: otherwise Azurite tries to reach Application Insights on the internet.
  nohup "$AZURITE_DIR/node_modules/.bin/azurite-blob" \
    --blobHost 127.0.0.1 --blobPort "$AZURITE_BLOB_PORT" \
    --location "$AZURITE_DIR/data" \
    --loose --skipApiVersionCheck --disableTelemetry \
    >"$AZURITE_DIR/azurite.log" 2>&1 &
  echo $! >"$PID_FILE"
  for _ in $(seq 1 100); do
    port_open && break
    kill -0 "$(cat "$PID_FILE")" 2>/dev/null || { say "azurite exited; see $AZURITE_DIR/azurite.log"; exit 1; }
    sleep 0.2
  done
  port_open || { say "azurite did not open port $AZURITE_BLOB_PORT in 20 s"; exit 1; }
  say "running (pid $(cat "$PID_FILE"), http://127.0.0.1:$AZURITE_BLOB_PORT)"
fi

KEY="$(development_account_key)"
[[ -n "$KEY" ]] || { say "could not find the development key in $AZURITE_DIR/node_modules/azurite/dist"; exit 1; }
ACCOUNT=devstoreaccount1
CONNECTION="DefaultEndpointsProtocol=http;AccountName=$ACCOUNT;AccountKey=$KEY;BlobEndpoint=http://127.0.0.1:$AZURITE_BLOB_PORT/$ACCOUNT;"
if [[ "$PRINT_ENV_ONLY" == 1 ]]; then
  # Exported for the snakemake-storage-plugin-azure test hook; never commit the expanded value.
  printf 'export AZURITE_CONNECTION_STRING=%q\n' "$CONNECTION"
  printf 'export SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME=%q\n' "$ACCOUNT"
else
  say "export the test environment with: eval \"\$(scripts/azurite-up.sh --env)\""
fi

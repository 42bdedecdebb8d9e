#!/usr/bin/env bash
# Stop the single-node SLURM started by scripts/slurm-up.sh, by the pids it recorded (never by process name).
# Running jobs are cancelled first, so no slurmstepd outlives the cluster. Configs and the database stay, so
# slurm-up.sh brings the same cluster back.
set -euo pipefail
state="${SLURM_LOCAL_STATE:-/var/lib/slurm-local}"
pidfile="$state/pids"
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

if [[ ! -s $pidfile ]]; then
    echo "slurm-down: nothing recorded in $pidfile"
    exit 0
fi

recorded_pid() { awk -v name="$1" '$1 == name { pid = $2 } END { print pid }' "$pidfile"; }

if kill -0 "$(recorded_pid slurmctld)" 2>/dev/null; then
    scancel --full --state=RUNNING,PENDING,SUSPENDED --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 1 50); do
        [[ -z "$(squeue -h -t RUNNING,COMPLETING -o %i 2>/dev/null)" ]] && break
        sleep 0.2
    done
fi

# Reverse start order: compute daemon, controller, accounting daemon, database, authentication.
for daemon in slurmd slurmctld slurmdbd mariadbd munged; do
    pid="$(recorded_pid "$daemon")"
    [[ -n $pid ]] || continue
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "slurm-down: $daemon (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        echo "slurm-down: stopped $daemon (pid $pid)"
    fi
done
: >"$pidfile"

#!/usr/bin/env bash
# A stand-in batch system for snakemake-executor-plugin-cluster-generic: runs the job script on this machine in
# the background and prints a job id. Without a status command the plugin watches its own finished/failed markers.
jobscript="$1"
nohup bash "$jobscript" >"$jobscript.out" 2>&1 &
echo "local-$!"

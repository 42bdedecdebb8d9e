#!/usr/bin/env bash
# Runs every bench/bench_*.py in turn with $PYTHON (default: python), printing each script's time and the total;
# a failing script does not stop the others, and the exit status says whether any failed. One script for
# `make bench` and `pixi run bench`, so that the two cannot drift apart (pixi's task shell has no loops).
python=${PYTHON:-python}
start=$(date +%s)
failed=""
for script in bench/bench_*.py; do
	echo "# $script"
	t0=$(date +%s)
	"$python" "$script" || {
		echo "# $script FAILED (exit $?)" >&2
		failed="$failed $script"
	}
	echo "# $script took $(($(date +%s) - t0)) s"
done
echo "# make bench: all scripts took $(($(date +%s) - start)) s (goal: 900 s)"
if [ -n "$failed" ]; then
	echo "# make bench: failed:$failed" >&2
	exit 1
fi

"""Cancel every job of a run when Snakemake cancels (Ctrl-C), not only the jobs its executor holds at that moment.

Why. Snakemake's remote executor takes its active jobs out of their list while it checks their status, and puts
back those still running afterwards (snakemake-interface-executor-plugins, executors/remote.py, the status loop
of RemoteExecutor). A Ctrl-C during a check (seconds under load: sacct or squeue per round) finds the list empty,
scancel is never called, and the jobs run on until their time limit. snakemake-executor-plugin-slurm names every
job of a run after the run's id (its ``run_uuid``, the job name it queries sacct and squeue by), so
``scancel --name <run_uuid>`` reaches all of them whatever the list holds.

profiles/slurm/profile.yaml installs this (``install()``) in the Snakemake process wherever sbatch is on PATH.
"""

from __future__ import annotations

import subprocess

SCANCEL_TIMEOUT_S = 60  # the plugin's own scancel timeout


def cancel_run(run_uuid: str) -> None:
    """scancel every job named ``run_uuid``; a failure is reported, not raised (the plugin's own cancel follows)."""
    try:
        done = subprocess.run(
            ["scancel", "--name", run_uuid], capture_output=True, text=True, timeout=SCANCEL_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        print(f"profiles/slurm: scancel --name {run_uuid} failed: {error}", flush=True)
        return
    if done.returncode != 0:
        print(f"profiles/slurm: scancel --name {run_uuid}: {done.stderr.strip()}", flush=True)


def install() -> None:
    """Make the slurm plugin's ``Executor.cancel`` cancel by the run's job name first, then as before."""
    import snakemake_executor_plugin_slurm as plugin

    original = plugin.Executor.cancel
    if getattr(original, "cancels_by_run_name", False):
        return

    def cancel(self):
        cancel_run(self.run_uuid)
        original(self)

    cancel.cancels_by_run_name = True
    plugin.Executor.cancel = cancel

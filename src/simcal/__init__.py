"""Simulation and calibration on Dask: the simulation contract, batched resumable sweeps, calibration rounds.

Main entry points:
- ``simcal.runner.simulate(model_ref, parameters, output, settings, backend, backend_options, threads, ...)``: a sweep
  into one Parquet file (``docs/simulation.md``); ``simcal.runner.Simulator`` for callers running rounds.
- ``simcal.api.SimulationService`` / ``submit`` / ``gather``: single simulations from notebooks and scripts.
- ``simcal.calibrate.calibrate(model_ref, observed, parameters, targets, simulations_output, trials_output, ...)``
- ``simcal.analyze.analyze_files(...)`` and ``simcal.visualize.visualize(...)``
- ``simcal status PATH...`` (``simcal.cli``): running and finished sweeps from their progress files.

One job per module: ``contract`` (references, ids; ``contract_error`` its error, ``seeds`` the replicates' seeds,
``model_outputs`` what a model returns made into rows), ``settings``, ``tasks`` (the plan), ``worker`` (what runs on
a worker; ``worker_interrupts`` its timeouts and cancels, ``result_rows`` the rows of a batch), ``store`` (parts and
the final file; ``part_schemas`` their one schema), ``outcomes`` (dead workers and timeouts), ``api``
(submit/gather; ``api_service`` its ``service`` backend), ``progress``, ``backends`` (clusters), ``runner`` (the
driver loop; ``batch_execution`` the batches in flight, ``sweep_probe`` the timing and fail-fast probes,
``sweep_plan`` and ``sweep_failures``), ``tables`` (parameter tables; ``text_table_checks``, ``column_names``,
``atomic_files`` the atomic writers), ``calibrate`` (the calibration; ``calibration_settings``, ``calibration_targets``,
``calibration_proposer``, ``calibration_rounds`` its rounds). A module split in parts keeps every public name of
its parts importable from itself.
"""

__all__ = [
    "analyze", "api", "backends", "calibrate", "cli", "contract", "design", "outcomes", "progress", "runner",
    "settings", "store", "tables", "targets", "tasks", "visualize", "worker",
]  # fmt: skip

"""Simulation and calibration on Dask: the simulation contract, batched resumable sweeps, calibration rounds.

Main entry points:
- ``simcal.runner.simulate(model_ref, parameters, output, settings, backend, backend_options, threads, ...)``
- ``simcal.calibrate.calibrate(model_ref, observed, parameters, targets, simulations_output, trials_output, ...)``
- ``simcal.analyze.analyze_files(...)`` and ``simcal.visualize.visualize(...)``
"""

__all__ = ["analyze", "backends", "calibrate", "contract", "design", "runner", "targets", "visualize"]

"""The simulation service: a long-lived HTTP API over a warm Dask cluster, and its client.

- ``simcal serve`` (``server``, ``app``, ``jobs`` with ``job_requests``, ``full_disk`` and ``job_interruptions``,
  ``registry`` with ``unsaved_changes``, ``cluster``, ``results``, ``keys``, ``limits``, ``telemetry``): FastAPI +
  uvicorn, the ``simcal[service]`` extra. Jobs run through ``simcal.runner.simulate``, the simulate wrapper's own call.
- ``client.SimulationClient``: submit, follow and fetch jobs (httpx); its errors in ``client_errors``.
- ``remote``: the ``service`` backend of the simulate wrapper and the calibration module.

Nothing here is imported by ``import simcal``; FastAPI and uvicorn only by the server modules.
"""

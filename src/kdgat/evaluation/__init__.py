"""Evaluation of trained KD-GAT detectors, one job per module:

* ``metrics``: metrics of one model on one split (numpy/scikit-learn);
* ``thresholds``: how each model's score becomes a decision (VGAE threshold chosen on validation);
* ``speed``: inference throughput and latency;
* ``stash``: results kept across a failed Snakemake group job;
* ``summary``: the teacher-vs-students table;
* ``plots``: report figures;
* ``inputs``: checks of what an evaluation and a summary are given (model files, metrics.json, baselines.json);
* ``targets``: the datasets, variants and seeds the evaluation module's config names;
* ``run``: scoring a detector and the file-level entry points the wrappers call (``evaluate_files``,
  ``summarize_files``).
"""

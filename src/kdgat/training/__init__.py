"""Training stages of the KD-GAT chain (VGAE → GAT → DQN fusion) on top of one shared epoch loop.

* ``vgae``, ``gat``, ``dqn``: one stage each; ``run(...)`` is the file-level entry point its wrapper calls;
* ``settings``: typed stage settings from the ``kd_gat`` config section (``StageSettings.from_config``);
* ``data``: the preprocess files a job reads; ``stage``: the optimiser holder and output writing the stages share;
* ``loop``: the epoch loop with early stopping and resumable checkpoints.
"""

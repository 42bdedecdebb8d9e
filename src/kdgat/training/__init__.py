"""Training stages of the KD-GAT chain (VGAE → GAT → DQN fusion) on top of one shared epoch loop.

Entry points (one per wrapper): kdgat.training.vgae.run, kdgat.training.gat.run, kdgat.training.dqn.run.
Submodules are imported explicitly to keep kdgat.inference ↔ kdgat.training free of import cycles.
"""

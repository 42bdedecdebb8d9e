"""Toy models that follow the simulation contract (``function(params, seed) -> DataFrame | dict``)."""

"""The error every part of the simulation contract raises. A module of its own so that the contract's parts
(simcal.contract, simcal.seeds, simcal.model_outputs) share it without importing each other; still
importable from ``simcal.contract``."""

from __future__ import annotations

from wrapper_rules import InputError


class ContractError(ValueError, InputError):
    """A model, target or parameter table does not follow the simulation contract."""

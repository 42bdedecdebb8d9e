"""A digest of a model's code for the resume record: the source file of the module that defines the model's
function. A sweep or calibration resumed after that file changed sets the parts of the old code aside
(``simcal.store.PartStore``) instead of mixing their rows with the new code's.

Only that one file counts: a change to a helper the model imports from another module is not seen (delete
``<output>.partial/`` after such a change). A model without a source file (defined in a notebook's kernel or an
interactive session, a builtin) has no digest, which one log line says.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
from collections.abc import Callable
from pathlib import Path

from simcal.contract import resolve_model

log = logging.getLogger(__name__)


def model_code_digest(model_ref: str) -> str | None:
    """The BLAKE2b digest of the source file that defines ``model_ref``'s callable, or None (logged) when it has
    none."""
    path = source_file(resolve_model(model_ref))
    if path is None:
        log.info(
            "model %s has no source file, so its resume record holds no digest of its code: after changing it, "
            "delete <output>.partial/ of its sweeps and calibrations before rerunning them",
            model_ref,
        )
        return None
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


def source_file(model: Callable) -> Path | None:
    """The file of the module that defines ``model``: a decorated function's own (``__wrapped__``), a
    ``functools.partial``'s function's, a callable object's class's; None when there is no such file."""
    target = model
    while isinstance(target, functools.partial):
        target = target.func
    target = inspect.unwrap(target)
    if not (inspect.isfunction(target) or inspect.ismethod(target) or inspect.isclass(target)):
        target = type(target)  # a callable object: the module of its class
    try:
        name = inspect.getsourcefile(target)
    except (TypeError, OSError):  # a builtin, or a class of no file
        return None
    path = Path(name) if name else None
    return path if path is not None and path.is_file() else None

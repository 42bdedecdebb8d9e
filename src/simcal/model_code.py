"""Digests of a model's code for the resume record. A sweep or calibration resumed after that code changed sets the
parts of the old code aside (``simcal.store.PartStore``) instead of mixing their rows with the new code's:

- ``model_code``: the source file of the module that defines the model's function;
- ``model_package``: every Python file of that module's top-level package, when the package is the researcher's
  own code, so that a change to a helper the model imports from its package is seen too. A model defined in a
  top-level module (no package) has none, and neither has one in an installed package (under site-packages or
  dist-packages, or the standard library), whose files change with its version, not in place.

A change to a module outside the model's package (another top-level module beside it, an installed library) is not
seen: delete ``<output>.partial/`` after such a change. A model without a source file (defined in a notebook's
kernel or an interactive session, a builtin) has no digest, which one log line says.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import sys
import sysconfig
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from simcal.contract import resolve_callable, resolve_model

log = logging.getLogger(__name__)

INSTALLED = ("site-packages", "dist-packages")  # folders of installed packages: their code is not digested


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


def model_package_digest(model_ref: str) -> str | None:
    """The BLAKE2b digest of every ``.py`` file of the top-level package of the module that defines ``model_ref``'s
    callable (their paths within the package and their bytes, in the order of their paths); None for a model of a
    top-level module, of an installed package or of no source file."""
    target = _defining(resolve_model(model_ref))
    top = (getattr(target, "__module__", None) or "").partition(".")[0]
    package = sys.modules.get(top)
    folders = [Path(folder) for folder in getattr(package, "__path__", None) or []]
    if not folders or source_file(target) is None or any(_installed(folder) for folder in folders):
        return None
    digest = hashlib.blake2b(digest_size=16)
    for folder in sorted(folders):
        for path in sorted(folder.rglob("*.py")):
            name = path.relative_to(folder).as_posix().encode()
            code = path.read_bytes()
            digest.update(b"%d:%s%d:" % (len(name), name, len(code)) + code)  # lengths: no two lists alike
    return digest.hexdigest()


def _installed(folder: Path) -> bool:
    """Whether ``folder`` is in an installed package or the standard library."""
    resolved = folder.resolve()
    if any(part in INSTALLED for part in resolved.parts):
        return True
    stdlib = {Path(sysconfig.get_paths()[name]).resolve() for name in ("stdlib", "platstdlib")}
    return any(resolved.is_relative_to(library) for library in stdlib)


def _defining(model: Callable) -> Any:
    """What defines ``model``: a decorated function's own (``__wrapped__``), a ``functools.partial``'s function, a
    callable object's class."""
    target = model
    while isinstance(target, functools.partial):
        target = target.func
    target = inspect.unwrap(target)
    if not (inspect.isfunction(target) or inspect.ismethod(target) or inspect.isclass(target)):
        target = type(target)  # a callable object: the module of its class
    return target


def source_file(model: Callable) -> Path | None:
    """The file of the module that defines ``model``: a decorated function's own (``__wrapped__``), a
    ``functools.partial``'s function's, a callable object's class's; None when there is no such file."""
    try:
        name = inspect.getsourcefile(_defining(model))
    except (TypeError, OSError):  # a builtin, or a class of no file
        return None
    path = Path(name) if name else None
    return path if path is not None and path.is_file() else None


def code_digests(references: Iterable[Any]) -> dict[str, str | None]:
    """``{reference: digest of its source file}`` of each "package.module:function" of ``references`` (a model, a
    generator, a target's loss function), for the params of the rule whose job calls them: Snakemake's params
    rerun trigger then reruns the job when a source file changed, as it does when a reference does. None where
    the reference has no source file or does not import here (a module only the jobs' environment holds: the job
    names it). As ``model_code_digest`` (not ``model_package_digest``), only the file that defines the function
    counts.
    """
    digests: dict[str, str | None] = {}
    for reference in references:
        if not isinstance(reference, str) or reference in digests:
            continue
        try:
            path = source_file(resolve_callable(reference))
        except Exception:  # a module that does not import here, or no callable: the job names it
            path = None
        digests[reference] = hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest() if path else None
    return digests

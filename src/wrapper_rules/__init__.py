"""What every wrapper checks of the rule that calls it, shared by the kdgat and simcal wrappers (which never
import each other's library): the inputs, outputs and params the rule names that the wrapper does not take (a
warning), and the ones it needs that the rule does not give (a refusal, before anything runs).

A warning, not an error, for a name the wrapper does not take: a rule may set a param only so that changing
it reruns the job. A refusal for a name it needs: else the job died after its set-up on ``AttributeError:
'Params' object has no attribute 'options'``, or ran without a file the rule meant to give under another
name.

Also the line between a user's mistake and a bug, for a wrapper's failure (``failure_logged``, which kdgat's and
simcal's ``failure_logged`` are): ``InputError``, which the libraries' error classes for bad input mix in, ends the
job with one logged line (``refuse_input``), and so does a full disk, a quota, a file over the size limit or too many
open files (``exhausted``: the machine's limit, not the code's), memory the process could not get
(``memory.out_of_memory``) or a file or folder the job may not write or another user's file it may not replace
(``not_permitted``); anything else keeps its traceback."""

from __future__ import annotations

import contextlib
import difflib
import errno
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import NoReturn

from wrapper_rules.memory import out_of_memory

KIND = {"input": "input", "output": "output", "params": "param"}
# The termination signals both libraries' wrappers turn into a clean stop, each with what usually sends it (for
# the log line that says why a job ended).
TERMINATION_CAUSES = {
    signal.SIGTERM: "a walltime, scancel or pod deletion",
    signal.SIGHUP: "its terminal or ssh session closed",
}
# Ctrl-C needs no handler: Python raises KeyboardInterrupt for it, which ``failure_logged`` turns into ``Interrupted``.
STOP_CAUSES = {**TERMINATION_CAUSES, signal.SIGINT: "Ctrl-C"}
# A wrapper's OPTIONAL for a section of which a rule may leave out every name (``OPTIONAL = {"params": ALL}``): the
# names of its TAKES, without repeating them. Positions (0) are not names: a section read by position still needs
# an item. Any other string there is refused (``optional_names``): ``"seed" in "seeds"`` is no way to test a name.
ALL = "ALL"


class RuleRefused(SystemExit):
    """A rule that does not give a wrapper what it needs: the message is logged (to the rule's log, or
    stderr), and the wrapper's process ends with status 2, a usage error, without a traceback (nothing of the
    library ran, so there is none to read)."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InputError(Exception):
    """A user's mistake, not a bug: a config key, param, input file or output name that is wrong, with a message
    that says which and what was expected. A marker that a library's error class mixes in beside its own base
    (``class ContractError(ValueError, InputError)``), so code that catches the base still catches it; a wrapper's
    ``failure_logged`` tells it from a bug by this class, never by its message (``refuse_input``)."""


class InputRefused(SystemExit):
    """An ``InputError`` at a wrapper's outermost frame: the process ends with status 1 and no traceback (there
    is no code to read, only the input to fix). ``error``: the ``InputError``."""

    def __init__(self, error: InputError) -> None:
        super().__init__(1)
        self.error = error

    def __str__(self) -> str:
        return str(self.error)


class Interrupted(SystemExit):
    """Ctrl-C (SIGINT, Python's ``KeyboardInterrupt``) at a wrapper's outermost frame, logged there as one line: the
    process ends with the shell's status for SIGINT, 130, without a traceback (a Ctrl-C is no bug)."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGINT)
        self.signal = signal.SIGINT


class MachineRefused(SystemExit):
    """An ``OSError`` or ``MemoryError`` by which the machine refused a job, not a bug (a resource it ran out of,
    ``exhausted``; memory, ``memory.out_of_memory``; a file it may not write, ``not_permitted``) at a wrapper's
    outermost frame: logged as one line, as a user's mistake is,
    and the process ends with status 1 and no traceback (the fix is space, a quota, a limit or a permission, not
    code). ``error``: the ``OSError`` or ``MemoryError``."""

    def __init__(self, error: OSError | MemoryError) -> None:
        super().__init__(1)
        self.error = error

    def __str__(self) -> str:
        return str(self.error)


def exhausted(error: BaseException) -> str | None:
    """What to do about ``error`` when it is an ``OSError`` of a resource the machine ran out of, not a bug: a full
    disk (ENOSPC), a disk quota (EDQUOT), a file past the process's size limit or the file system's largest file
    (EFBIG), too many open files in the process (EMFILE, with its ``ulimit -n``) or in the system (ENFILE). None for
    any other error. The error's own text names the file (the libraries' writers name the output)."""
    if not isinstance(error, OSError):
        return None
    if error.errno == errno.ENOSPC:
        return (
            "free space on the file system holding it (`df -h` shows it) or write the outputs to another one"
        )
    if error.errno == errno.EDQUOT:
        return (
            "free space within your disk quota on the file system holding it (`quota -s` shows it) or ask for a "
            "larger quota"
        )
    if error.errno == errno.EFBIG:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY:
            return (
                f"the job may not write a file past {limit} bytes (its file size limit, `ulimit -f`): raise it "
                "(`ulimit -f unlimited` in the shell or job script that starts snakemake)"
            )
        return "the file is larger than its file system holds: write the outputs to another file system"
    if error.errno == errno.EMFILE:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        raise_to = "unlimited" if hard == resource.RLIM_INFINITY else hard
        return (
            f"the job has as many files open as its limit allows ({soft}, `ulimit -n`; the hard limit is "
            f"{raise_to}): raise it with `ulimit -n {raise_to}` in the shell or job script that starts snakemake, "
            "or run fewer workers or threads"
        )
    if error.errno == errno.ENFILE:
        return (
            "the system's table of open files is full: end programs that hold many files open, or have an "
            "administrator raise fs.file-max"
        )
    return None


def not_permitted(error: BaseException) -> str | None:
    """What to do about ``error`` when it is an ``OSError`` for a file the job may not read or write (EACCES: a
    folder made read-only, another user's file), on a read-only file system (EROFS), or another user's file that
    only its owner may replace, remove or change the mode or times of (EPERM: an output of another user in a folder
    with the sticky bit, a ``chmod`` of another user's file), naming the job's user and the owner and mode of the
    file where it is there and of its folder (a write through a temporary file needs the folder's permission). None
    for any other error, and for one that names no file."""
    if not isinstance(error, OSError) or not error.filename:
        return None
    if error.errno == errno.EROFS:
        return "its file system is mounted read-only: write the outputs to a writable one"
    if error.errno not in (errno.EACCES, errno.EPERM):
        return None
    from pathlib import Path

    path = Path(os.fsdecode(error.filename))
    folder = path.parent
    while not os.path.lexists(folder) and folder != folder.parent:  # the nearest folder there
        folder = folder.parent
    described, owners = [], {}
    for name, seen in (("it", path), (f"its folder {folder}", folder)):
        with contextlib.suppress(OSError):
            found = os.lstat(seen)
            owners[name] = user_name(found.st_uid)
            described.append(f"{name} is {owners[name]}'s, mode {found.st_mode & 0o7777:04o}")
    user = user_name(os.geteuid())
    runs = f"the job runs as {user}" + "".join(f", {text}" for text in described)
    if error.errno == errno.EPERM:
        owner = owners.get("it", "its owner")
        return (
            f"{runs}: only {owner} may replace or remove it in a folder with the sticky bit (mode 1xxx), or change "
            f"its mode or times: have {owner} remove it or hand it to {user} (`chown`), or write the outputs to "
            "another folder"
        )
    return f"{runs}: let {user} read and write there (`chmod`, by the owner), or write the outputs to another folder"


def user_name(uid: int) -> str:
    """The name of the user ``uid``, or ``uid <n>`` where this host knows none (a container, another site's directory
    service): how every message of the catalog names the owner of a file or lock."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def refuse_exhausted(
    what: str, error: OSError | MemoryError, advice: str, log: logging.Logger, named: str | None = None
) -> NoReturn:
    """End a wrapper on a resource the machine ran out of (``exhausted``, ``memory.out_of_memory``: ``named`` is the
    error as the line names it) or a file it may not write (``not_permitted``): ``<what> failed: <error>: <advice>, then
    rerun the job`` as one ERROR record (no traceback) to the rule's log and on stderr, as ``refuse_input`` does,
    then ``MachineRefused`` (exit status 1). The log is often on the full disk itself: a record it cannot take is
    dropped without Python's ``--- Logging error ---`` traceback, and the line on stderr still says it."""
    message = f"{what} failed: {named or error}: {advice}, then rerun the job"
    raising = logging.raiseExceptions
    logging.raiseExceptions = False
    try:
        log.error(message)
    finally:
        logging.raiseExceptions = raising
    if not _logs_to_stderr(log):
        print(message, file=sys.stderr, flush=True)
    raise MachineRefused(error) from error


def stopped_by(stop: BaseException) -> str:
    """The signal behind a wrapper's stop, with what usually sends it, as its log line names it: ``SIGTERM (a
    walltime, scancel or pod deletion)`` for a library's exception for a termination signal (code 128 + the
    signal), ``SIGINT (Ctrl-C)`` for a ``KeyboardInterrupt``."""
    signum = signal.SIGINT if isinstance(stop, KeyboardInterrupt) else signal.Signals(stop.code - 128)
    return f"{signum.name} ({STOP_CAUSES.get(signum, 'a signal')})"


def refuse_input(what: str, error: InputError, log: logging.Logger) -> NoReturn:
    """End a wrapper on a user's mistake: ``<what> failed: <message>`` as one ERROR record (no traceback) to the
    rule's log, the same line on stderr (so the terminal shows it above Snakemake's RuleException) unless the log
    already goes there, then ``InputRefused`` (exit status 1)."""
    message = f"{what} failed: {error}"
    log.error(message)
    if not _logs_to_stderr(log):
        print(message, file=sys.stderr, flush=True)
    raise InputRefused(error) from error


@contextlib.contextmanager
def failure_logged(
    what: str,
    log: logging.Logger,
    stop: type[BaseException],
    stopped: Callable[[BaseException], str],
    guard: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    mem_mb: object = None,
    rule: str | None = None,
) -> Iterator[None]:
    """A wrapper's outermost frame around its library call (a library's ``failure_logged`` says which ``stop`` and
    ``guard``). The block runs inside ``guard()`` (kdgat's turns SIGTERM into its ``stop``). ``stop``, the library's
    exception for a termination signal, is logged as the one ERROR line ``stopped(exception)`` (no traceback: a
    signal is no bug) and re-raised. Ctrl-C's ``KeyboardInterrupt`` is a stop too: the one line
    ``stopped(interrupt)``, then ``Interrupted`` (status 130, no traceback). A user's mistake (``InputError``) ends
    the process with ``refuse_input``: ``<what> failed: <message>`` in ``log`` and on stderr, status 1, no
    traceback; so does a full disk, a quota, a file past the size limit or too many open files (``exhausted``), a
    ``MemoryError`` (naming the memory the process had and ``mem_mb``, the job's resource, with ``rule``, the
    wrapper's ``snakemake.resources.mem_mb`` and ``snakemake.rule``: ``memory.out_of_memory``), or a file or folder
    the job may not write (``not_permitted``), with what to do (``refuse_exhausted``, ``MachineRefused``). ``InputRefused``,
    ``RuleRefused``, ``MachineRefused`` and ``Interrupted`` from within (a nested frame, ``check_rule``) were logged
    where they were raised, and a ``SystemExit`` with status 0 or None is no failure: they pass through
    unlogged. Any other exception is logged with its traceback as ``<what> failed``, then re-raised unchanged."""
    try:
        with guard():
            yield
    except stop as error:
        log.error("%s", stopped(error))
        raise
    except KeyboardInterrupt as interrupt:
        log.error("%s", stopped(interrupt))
        raise Interrupted from interrupt
    except InputError as error:
        refuse_input(what, error, log)
    except (InputRefused, RuleRefused, MachineRefused, Interrupted):
        raise
    except MemoryError as error:
        named, advice = out_of_memory(error, mem_mb, rule)
        refuse_exhausted(what, error, advice, log, named=named)
    except OSError as error:
        advice = exhausted(error) or not_permitted(error)
        if advice is None:
            log.exception("%s failed", what)
            raise
        refuse_exhausted(what, error, advice, log)
    except SystemExit as error:
        if error.code not in (0, None):
            log.exception("%s failed", what)
        raise
    except BaseException:
        log.exception("%s failed", what)
        raise


def _logs_to_stderr(log: logging.Logger) -> bool:
    """Whether a record of ``log`` reaches stderr already (a rule without ``log:``): its own handlers and those of
    the ancestors it propagates to."""
    current: logging.Logger | None = log
    while current is not None:
        if any(type(h) is logging.StreamHandler and h.stream is sys.stderr for h in current.handlers):
            return True
        current = current.parent if current.propagate else None
    return False


def set_up(
    configure: Callable[[str | None], None],
    log: logging.Logger,
    what: str,
    logs: Sequence,
    rule: Mapping[str, Sequence],
    takes: Mapping[str, Sequence[str | int]],
    optional: Mapping[str, Sequence[str]],
) -> None:
    """A wrapper's set-up, for a library's ``configure_wrapper``: every record to the rule's first log through the
    library's ``configure`` (stderr when the rule has no ``log:``), then a warning for each input, output or param
    of ``rule`` the wrapper does not take, and a refusal (``RuleRefused``, exit status 2, logged) of a rule that
    lacks one of ``takes`` that is not ``optional`` (``check_rule``)."""
    configure(logs[0] if len(logs) else None)
    check_rule(what, rule, takes, optional, log)


def check_rule(
    what: str,
    rule: Mapping[str, Sequence],
    takes: Mapping[str, Sequence[str | int]],
    optional: Mapping[str, Sequence[str]],
    log: logging.Logger,
) -> None:
    """The names of a rule checked against the ``what`` wrapper's: a warning for each it does not take
    (``warn_unknown``), then, when it lacks one the wrapper needs, the refusal (``missing_items``) logged as
    an ERROR and raised as ``RuleRefused``. ``takes``: the wrapper's meta.yaml names per section (an int for
    a position it reads); ``optional``: those of them a rule may leave out."""
    warn_unknown(what, rule, takes, log)
    message = missing_items(what, rule, takes, optional)
    if message:
        log.error(message)
        raise RuleRefused(message)


def warn_unknown(
    what: str, rule: Mapping[str, Sequence], takes: Mapping[str, Sequence[str | int]], log: logging.Logger
) -> None:
    """Log a warning for each input, output or param of ``rule`` (``{"input": snakemake.input, "output": ...,
    "params": ...}``) that the ``what`` wrapper does not take, naming the ones it does (``takes``: its meta.yaml's
    names per section, an int for a position it reads) and the closest. Each section is a list that names its
    items through ``keys()`` (Snakemake's), so that items without a name are counted too."""
    for section, items in rule.items():
        for message in unknown_items(what, section, items, tuple(takes.get(section, ()))):
            log.warning(message)


def missing_items(
    what: str,
    rule: Mapping[str, Sequence],
    takes: Mapping[str, Sequence[str | int]],
    optional: Mapping[str, Sequence[str]],
) -> str | None:
    """The refusal of a rule that lacks an input, output or param the ``what`` wrapper needs (a name in
    ``takes`` and not in ``optional``, or its first item where ``takes`` holds 0), one message for every
    section: the missing names, what the section takes, which of it may be left out, a given name that looks
    like a missing one misspelt, and items given without a name. None when the rule gives all it needs."""
    parts = []
    for section, taken in takes.items():
        items = rule.get(section, ())
        names = list(items.keys()) if hasattr(items, "keys") else []
        known = [key for key in taken if isinstance(key, str)]
        may_lack = optional_names(section, taken, optional)
        kind = KIND.get(section, section)
        if any(isinstance(key, int) for key in taken):
            # read by name with its first item standing in, or by position alone: any one item will do
            if len(items):
                continue
            needed = [key for key in known if key not in may_lack]
            missing = f"no {kind} {_listed(needed, 'or')}" if needed else f"no {kind}"
            if known:
                takes_what = f"{section}: {', '.join(known)} (or else its first item, named or not)"
            else:
                takes_what = f"{section}: one item, with or without a name"
            parts.append(f"{missing} (it takes {takes_what})")
            continue
        lacking = [key for key in known if key not in may_lack and key not in names]
        if not lacking:
            continue
        notes = [f"{_listed(may_lack, 'and')} may be left out"] if may_lack else []
        strangers = [name for name in names if name not in known]
        for key in lacking:
            close = difflib.get_close_matches(key, strangers, n=1)
            if close:
                notes.append(f"is {kind} {close[0]!r} a misspelt {key!r}?")
        unnamed = len(items) - _named_count(section, items, names)
        if unnamed:
            notes.append(
                f"{unnamed} {kind} item(s) have no name: name them, e.g. `{section}: {lacking[0]}=...`"
            )
        parts.append(
            f"no {kind} {_listed(lacking, 'or')} (it takes {section}: {', '.join(known)}"
            + "".join(f"; {note}" for note in notes)
            + ")"
        )
    return f"{what} wrapper: the rule gives " + ", and ".join(parts) if parts else None


def optional_names(
    section: str, taken: Sequence[str | int], optional: Mapping[str, Sequence[str] | str]
) -> list[str]:
    """The names of ``taken`` (the section's TAKES) that a rule may leave out: all of them for ``ALL``, else those
    ``optional`` lists for the section."""
    known = [key for key in taken if isinstance(key, str)]
    listed = optional.get(section, ())
    if listed == ALL:
        return known
    if isinstance(listed, str):
        raise TypeError(f"OPTIONAL[{section!r}] is {listed!r}: a tuple of names, or ALL (wrapper_rules.ALL)")
    return [key for key in known if key in listed]


def _listed(names: Sequence[str], conjunction: str) -> str:
    """'a', 'a' and 'b', 'a', 'b' and 'c' (or: with 'or')."""
    quoted = [repr(name) for name in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} {conjunction} {quoted[-1]}"


def _named_count(section: str, items: Sequence, names: Sequence[str]) -> int:
    """How many of ``items`` the names cover: a named input or output may be a list of files (its items), a
    named param is one item."""
    return sum(
        1 if section == "params" or isinstance(items.get(name), str | os.PathLike) else len(items.get(name))
        for name in names
    )


def unknown_items(what: str, section: str, items: Sequence, takes: tuple[str | int, ...]) -> list[str]:
    """The warnings of ``configure_wrapper`` for one section: one per name not in ``takes``, one for the items
    without a name. A section the wrapper reads by position (an int in ``takes``) takes any name and none."""
    if any(isinstance(key, int) for key in takes):
        return []
    names = list(items.keys()) if hasattr(items, "keys") else []
    known = [key for key in takes if isinstance(key, str)]
    listing = ", ".join(known) or "none"
    kind = {"input": "an input", "output": "an output"}.get(section, "a param")
    messages = []
    for name in names:
        if name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1)
        guess = f"did you mean {close[0]!r}?" if close else f"no name it takes in {section} is close"
        rerun = " A param set only to make a change rerun the job may stay." if section == "params" else ""
        messages.append(
            f"{section}.{name} is not {kind} of the {what} wrapper, which ignores it ({guess}); {what} takes "
            f"{section}: {listing}.{rerun}"
        )
    unnamed = len(items) - _named_count(section, items, names)
    if unnamed:
        messages.append(
            f"{section} has {unnamed} item(s) without a name, which the {what} wrapper ignores: it takes "
            f"{section} by name ({listing}), e.g. `{section}: {(known or ['name'])[0]}=...`."
        )
    return messages

"""What a ``kdgat`` command shows while it runs: log records on stderr (and in ``--log``), and on an interactive
terminal a progress bar per training run (epochs, with each epoch's batches below) with rate and ETA.

Without a terminal (a pipe, a batch job's output file) there is no bar: the loop's own log line per epoch
(losses, validation metrics, graphs/s, ETA) is the progress, exactly as in a Snakemake job's log.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from tqdm import tqdm

from wrapper_rules.log_times import log_formatter

MODES = ("auto", "bar", "lines")


def wants_bar(mode: str, stream: TextIO) -> bool:
    if mode == "auto":
        return bool(getattr(stream, "isatty", lambda: False)())
    return mode == "bar"


class _BarSafeHandler(logging.StreamHandler):
    """Writes records above the bars (tqdm.write) so that a bar is redrawn below them, not torn."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


def configure_logging(log_file: str | None, bar: bool, stream: TextIO | None = None) -> None:
    """kdgat's records (INFO and up) to ``stream`` (stderr) and, with ``log_file``, appended to that file too."""
    stream = sys.stderr if stream is None else stream
    handlers: list[logging.Handler] = [_BarSafeHandler(stream) if bar else logging.StreamHandler(stream)]
    if log_file:
        from pathlib import Path

        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="a"))
    for handler in handlers:
        handler.setFormatter(log_formatter())
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(logging.INFO)


# Columns of a history row shown next to the bar (the rest is in the log line and history.csv).
SHOWN = ("train_loss", "val_loss", "val_f1", "val_auc", "val_reward")


class ProgressBar:
    """An epoch-loop observer (kdgat.training.loop.EpochCallback): one bar of epochs per training run, and one
    of the running epoch's batches (for the DQN stage: its gradient updates) that clears when the epoch ends."""

    def __init__(self, stream: TextIO | None = None, refresh_seconds: float = 0.1):
        self.stream = sys.stderr if stream is None else stream
        self.refresh_seconds = refresh_seconds  # tqdm redraws at most this often
        self.epochs: tqdm | None = None
        self.batches: tqdm | None = None

    def fit_started(self, name: str, first_epoch: int, epochs: int, history: list[dict]) -> None:
        self.epochs = tqdm(
            total=epochs,
            initial=first_epoch,
            desc=name,
            unit="epoch",
            file=self.stream,
            dynamic_ncols=True,
            position=0,
            mininterval=self.refresh_seconds,
        )

    def batch_ended(self, done: int, total: int) -> None:
        if self.batches is None or self.batches.total != total or done == 1:
            self._close_batches()
            self.batches = tqdm(
                total=total,
                desc="  batches",
                unit="batch",
                file=self.stream,
                leave=False,
                position=1,
                mininterval=self.refresh_seconds,
            )
        self.batches.update(done - self.batches.n)

    def epoch_ended(self, row: dict, epochs: int, stopped_early: bool) -> None:
        self._close_batches()
        if self.epochs is None:
            return
        shown = {key: f"{row[key]:.4g}" for key in SHOWN if isinstance(row.get(key), int | float)}
        shown["graphs/s"] = f"{row.get('graphs_per_s', 0):.0f}"
        self.epochs.set_postfix(shown, refresh=False)
        self.epochs.update(1)
        if stopped_early:
            self.epochs.set_description(f"{self.epochs.desc} (early stop)")

    def fit_ended(self, result: dict) -> None:
        self._close_batches()
        if self.epochs is not None:
            self.epochs.close()
            self.epochs = None

    def _close_batches(self) -> None:
        if self.batches is not None:
            self.batches.close()
            self.batches = None

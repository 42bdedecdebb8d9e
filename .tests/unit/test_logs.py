"""kdgat.logs: what a wrapper sets up — records to snakemake.log, a failure logged with its traceback, re-raised."""

from __future__ import annotations

import logging

import pytest

from kdgat.logs import configure, failure_logged


def test_records_and_a_failure_go_to_the_log_file(tmp_path, restore_logging):
    log = tmp_path / "logs" / "job.log"
    configure(log)
    logging.getLogger("kdgat.training").info("epoch 1/3")
    with pytest.raises(ValueError, match="bad graphs"), failure_logged("GAT training"):
        raise ValueError("bad graphs")
    text = log.read_text()
    assert "INFO kdgat.training: epoch 1/3" in text
    assert "ERROR kdgat: GAT training failed" in text and "ValueError: bad graphs" in text


def test_append_or_start_afresh(tmp_path, restore_logging):
    log = tmp_path / "job.log"
    log.write_text("attempt 1\n")
    configure(log)
    logging.getLogger("kdgat").info("attempt 2")
    assert log.read_text().startswith("attempt 1\n")
    configure(log, append=False)
    logging.getLogger("kdgat").info("attempt 3")
    assert "attempt 1" not in log.read_text() and "attempt 3" in log.read_text()

"""simcal.logs: what a wrapper sets up: records to snakemake.log, a failure logged with its traceback, re-raised."""

from __future__ import annotations

import logging

import pytest

from simcal.logs import configure, failure_logged


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        handler.close()
    root.handlers[:], root.level = handlers, level


def test_records_and_a_failure_go_to_the_log_file(tmp_path, restore_logging):
    log = tmp_path / "logs" / "job.log"
    configure(log)
    logging.getLogger("simcal.runner").info("12/24 done")
    logging.getLogger("distributed.scheduler").info("chatter below warnings")
    with pytest.raises(KeyboardInterrupt), failure_logged("simulate"):
        raise KeyboardInterrupt  # a killed job is logged too, and still stops
    text = log.read_text()
    assert "INFO simcal.runner: 12/24 done" in text and "chatter" not in text
    assert "ERROR simcal: simulate failed" in text and "KeyboardInterrupt" in text

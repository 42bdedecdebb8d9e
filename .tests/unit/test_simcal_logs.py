"""simcal.logs: what a wrapper sets up: records to snakemake.log, a failure logged with its traceback, re-raised."""

from __future__ import annotations

import logging

import pytest

from simcal.logs import configure, configure_wrapper, failure_logged


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


def test_a_wrapper_without_a_log_logs_to_stderr_and_warns_of_a_misspelt_param(capsys, restore_logging):
    # a rule without `log:` (snakemake.log is empty) and `params: replicate=4` for `replicates`
    takes = {"input": (0,), "params": ("model", "replicates", "settings")}
    configure_wrapper("simulate", [], {"params": {"model": "m:f", "replicate": 4}}, takes)
    logging.getLogger("simcal.runner").info("12/24 done")
    err = capsys.readouterr().err
    assert "INFO simcal.runner: 12/24 done" in err
    (warning,) = [line for line in err.splitlines() if " WARNING simcal: " in line]
    assert "params.replicate is not a param of the simulate wrapper" in warning
    assert "did you mean 'replicates'?" in warning and "takes params: model, replicates, settings" in warning

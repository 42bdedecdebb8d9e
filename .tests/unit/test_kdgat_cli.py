"""The `kdgat` command without data: every option explained, settings resolved as the kd_gat module resolves them,
the library's defaults equal to the schemas' (a key the config leaves out means the same to both), clear errors,
the loud GPU rule, and the progress bar's content."""

from __future__ import annotations

import argparse
import inspect
import io
import json
from pathlib import Path

import pytest
import yaml
from testkit import REPO, pretend_cpu_wheel

from kdgat.cli import main, parser
from kdgat.cli.progress import ProgressBar
from kdgat.tracking import TrackingSettings
from kdgat.training.settings import StageSettings

CONFIG = REPO / "config" / "config.yaml"
MODULES = REPO / "workflow" / "modules"


def schema(module: str) -> dict:
    return yaml.safe_load((MODULES / module / "schemas" / "config.schema.yaml").read_text())


def subcommand_parsers(root: argparse.ArgumentParser, prefix: tuple = ()):
    for action in root._actions:  # argparse offers no public walk over sub-parsers
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*prefix, name), child
                yield from subcommand_parsers(child, (*prefix, name))


COMMANDS = dict(subcommand_parsers(parser()))


@pytest.fixture
def stderr_text(capsys, restore_logging):
    """Everything the command printed so far (its log goes to stderr)."""
    seen = []

    def text() -> str:
        captured = capsys.readouterr()
        seen.append(captured.err + captured.out)
        return "".join(seen)

    return text


def test_every_command_is_there_and_explains_every_option(capsys):
    assert {" ".join(name) for name in COMMANDS} == {
        "preprocess", "train", "train vgae", "train gat", "train dqn", "evaluate", "baselines", "summarize",
    }  # fmt: skip
    for name, command in COMMANDS.items():
        assert command.description, name
        for action in command._actions:
            assert action.help and len(action.help) > 10, (name, action.dest)
        with pytest.raises(SystemExit) as done:
            main([*name, "--help"])
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert all(option in text for a in command._actions for option in a.option_strings), name


def test_settings_come_from_the_workflow_config_then_set_then_flags(capsys):
    section = yaml.safe_load(CONFIG.read_text())["kd_gat"]
    base = ["train", "gat", "--config", CONFIG, "--data", "d", "--chain", "c", "--variant", "student_kd",
            "--tracking", "none", "--print-settings"]  # fmt: skip
    assert main([str(a) for a in base]) == 0
    printed = json.loads(capsys.readouterr().out)
    # What the kd_gat module hands the train_gat_student_kd rule at the first seed, and its inputs and outputs by
    # the module's paths.
    first = section["seeds"][0]
    job = {key: value for key, value in section.items() if key != "seeds"} | {"seed": first}
    assert printed["settings"] == StageSettings.from_config(job, "gat", "student_kd").as_dict()
    assert printed["inputs"] == {"metadata": "d/metadata.json", "train": "d/train.pt", "val": "d/val.pt",
                                 "teacher": f"c/seed_{first}/teacher/gat/model.pt",
                                 "vgae": f"c/seed_{first}/student_kd/vgae/model.pt"}  # fmt: skip
    assert (
        printed["outputs"]["model"] == f"c/seed_{first}/student_kd/gat/model.pt"
        and printed["checkpoint"] == f"c/seed_{first}/student_kd/gat/last.pt"
    )
    assert printed["threads"] == section["resources"]["threads"]

    overridden = [*base, "--set", "training.gat.epochs=3", "--set", "curriculum.enabled=false", "--lr", "0.01",
                  "--override", "heads=2", "--seed", "9"]  # fmt: skip
    assert main([str(a) for a in overridden]) == 0
    settings = json.loads(capsys.readouterr().out)["settings"]
    assert settings["training"]["epochs"] == 3 and settings["training"]["lr"] == 0.01
    assert settings["curriculum"]["enabled"] is False and settings["model"]["heads"] == 2
    assert settings["seed"] == 9 and settings["overrides"] == {"heads": 2}


def test_a_config_with_seeds_trains_its_first_seed(tmp_path, capsys):
    (tmp_path / "kd.yaml").write_text(yaml.safe_dump({"seeds": [7, 8], "device": "cpu"}))
    args = [
        "train",
        "vgae",
        "--config",
        tmp_path / "kd.yaml",
        "--data",
        "d",
        "--out",
        "o",
        "--print-settings",
    ]
    assert main([str(a) for a in args]) == 0
    assert json.loads(capsys.readouterr().out)["settings"]["seed"] == 7


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "training.gat.epoch=3"], "kd_gat.training.gat: unknown keys ['epoch']"),
        (["--set", "training.gat.epochs=many"], "kd_gat.training.gat.epochs: expected int, got 'many'"),
        (["--set", "tracking.backend=wandb"], "kd_gat.tracking.backend must be one of ('none', 'mlflow')"),
        (["--override", "wings=2"], "sweep column 'wings' is neither a training setting"),
        (["--set", "epochs"], "--set expects KEY=VALUE, got 'epochs'"),
        (["--config", "no/such.yaml"], "settings file no/such.yaml does not exist"),
    ],
)
def test_bad_settings_fail_naming_the_key(args, message, tmp_path, stderr_text):
    code = main(["train", "gat", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--vgae", "v", *args])
    assert code in (1, 2) and message in stderr_text()


def test_missing_inputs_name_the_option_and_missing_files_the_file(tmp_path, stderr_text):
    assert main(["train", "dqn", "--out", str(tmp_path)]) == 2
    assert "metadata.json is needed: give --metadata or --data" in stderr_text()
    args = ["train", "vgae", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--device", "cpu"]
    assert main(args) == 1
    assert f"{tmp_path}/metadata.json: missing (expected preprocess metadata with 'num_ids')" in stderr_text()
    assert main(["train", "gat", "--variant", "student_kd", "--data", "d", "--out", "o"]) == 2
    assert "the teacher's gat model (student_kd) is needed: give --teacher or --chain" in stderr_text()


def test_preprocess_from_a_config_reads_the_dataset_as_the_workflow_does(tmp_path, monkeypatch, stderr_text):
    # A synthetic dataset's fusion_NN_<what> file is a whole capture of the fusion split (kdgat.layout, as in the
    # preprocess module), never a test scenario; and a dataset giving its logs twice is refused, naming both.
    from kdgat.synthetic import generate_dataset

    entries = [
        ("train_01_attack_free", "none"),
        ("train_02_with_attacks", "dos"),
        ("test_01_dos", "dos"),
        ("fusion_01_attack_free", "none"),
    ]
    synthetic = {
        "seed": 11,
        "format": "hcrl_csv",
        "num_ids": 25,
        "files": [{"split": s, "name": a, "attack": a, "duration_s": 1} for s, a in entries],
    }
    monkeypatch.chdir(tmp_path)
    generate_dataset(synthetic, "resources/preprocess/syn")
    config = {
        "datasets": {"syn": {"format": "hcrl_csv", "synthetic": synthetic}},
        "preprocess": {"held_out": {"fusion": 0.3}, "window_size": 100, "stride": 100},
    }
    Path("config.yaml").write_text(yaml.safe_dump(config))
    assert main(["preprocess", "--dataset", "syn", "--config", "config.yaml", "--out", "out"]) == 0
    metadata = json.loads(Path("out/metadata.json").read_text())
    assert metadata["files"]["fusion"] == ["resources/preprocess/syn/fusion_01_attack_free/none.csv"]
    assert list(metadata["files"]["test"]) == ["dos"]

    config["datasets"]["syn"]["path"] = "resources/preprocess/syn"
    Path("config.yaml").write_text(yaml.safe_dump(config))
    assert main(["preprocess", "--dataset", "syn", "--config", "config.yaml", "--out", "again"]) == 2
    assert "datasets.syn: give its logs in exactly one of synthetic.files, path or files" in stderr_text()
    assert not Path("again").exists()


def test_a_bad_path_flag_is_named_as_the_flag_not_as_a_config_key(tmp_path, monkeypatch, stderr_text):
    # --path overrides datasets.<name>: the message must not send the user to a config entry they never wrote.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lab" / "train_01_attack_free").mkdir(parents=True)
    (tmp_path / "lab" / "train_01_attack_free" / "normal.csv").write_text("1.0,0316,1,05,R\n")
    assert main(["preprocess", "--dataset", "lab", "--path", "lab", "--out", "out"]) == 2
    assert "--path: dataset directory lab has no CAN logs" in stderr_text()
    assert "datasets.lab" not in stderr_text()
    assert not Path("out").exists()


def test_a_gpu_the_job_holds_but_cannot_use_fails_loudly(tmp_path, monkeypatch, stderr_text):
    pretend_cpu_wheel(monkeypatch, tmp_path)
    args = ["train", "vgae", "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main([*args, "--device", "cuda"]) == 1
    assert "GPUUnusableError" in stderr_text() and "device 'cuda' requested" in stderr_text()
    assert "Install a CUDA build: pip install torch==" in stderr_text()  # the command that fixes it
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # what SLURM sets for a job holding a GPU
    assert main([*args, "--device", "auto"]) == 1
    assert "this job holds a GPU (CUDA_VISIBLE_DEVICES=0)" in stderr_text()
    assert not (tmp_path / "o").exists()  # stopped before any data was read or written


def test_the_library_defaults_the_commands_use_are_the_schemas():
    """A key the config leaves out (the command sees the raw file, the workflow the validated config) means the
    same: the defaults of what each command passes on equal the module schemas' defaults."""
    from kdgat.evaluation.run import evaluate_files
    from kdgat.evaluation.speed import measure_inference_speed
    from kdgat.preprocess import preprocess_dataset

    def defaults(function, names):
        parameters = inspect.signature(function).parameters
        return {name: parameters[name].default for name in names}

    preprocess = schema("preprocess")["properties"]["preprocess"]["properties"]
    keys = ("window_size", "stride", "val_fraction", "time_blocks", "seed", "bad_rows")
    assert defaults(preprocess_dataset, keys) == {key: preprocess[key]["default"] for key in keys}
    assert (defaults(preprocess_dataset, ["held_out"])["held_out"] or {}) == preprocess["held_out"]["default"]
    evaluation = schema("evaluation")["properties"]["evaluation"]["properties"]
    keys = ("batch_size", "device")
    assert defaults(evaluate_files, keys) == {key: evaluation[key]["default"] for key in keys}
    assert (
        list(defaults(evaluate_files, ["fpr_targets"])["fpr_targets"]) == evaluation["fpr_targets"]["default"]
    )
    speed = evaluation["speed"]["properties"]
    assert defaults(measure_inference_speed, speed) == {key: spec["default"] for key, spec in speed.items()}
    tracking = schema("kd_gat")["properties"]["kd_gat"]["properties"]["tracking"]["properties"]
    assert {key: getattr(TrackingSettings(), key) for key in tracking} == {
        k: s["default"] for k, s in tracking.items()
    }


def test_the_progress_bar_shows_epochs_and_batches_with_rate_and_eta():
    stream = io.StringIO()
    bar = ProgressBar(stream, refresh_seconds=0)  # every update drawn
    bar.fit_started("gat[teacher]", 1, 4, [{"epoch": 1}])  # resumed after epoch 1
    for done in (1, 2, 3):
        bar.batch_ended(done, 3)
    bar.epoch_ended({"epoch": 2, "val_loss": 0.25, "graphs_per_s": 1234.0}, 4, False)
    bar.fit_ended({})
    text = stream.getvalue()
    assert "gat[teacher]" in text and "2/4" in text and "val_loss=0.25" in text and "graphs/s=1234" in text
    assert "3/3" in text and "batch" in text  # the epoch's batches
    assert "epoch/s" in text or "s/epoch" in text  # the rate
    assert "<" in text  # elapsed<remaining: the ETA

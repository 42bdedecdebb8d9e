"""The `kdgat` command without data: every option explained, settings resolved as the kd_gat module resolves them,
the library's defaults equal to the schemas' (a key the config leaves out means the same to both), clear errors,
the loud GPU rule, and the progress bar's content."""

from __future__ import annotations

import argparse
import inspect
import io
import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
import yaml
from testkit import REPO, pretend_cpu_wheel

from kdgat.cli import main, parser
from kdgat.cli.config import DEVICE_PATTERN, WORKFLOW_SECTIONS
from kdgat.cli.progress import ProgressBar, wants_bar
from kdgat.cli.train import RESOURCE_KEYS
from kdgat.tracking import TrackingSettings
from kdgat.training.settings import StageSettings

CONFIG = REPO / "config" / "config.yaml"
MODULES = REPO / "workflow" / "modules"


# A dataset's logs as the preprocess command takes them (files the tests' mocked library never reads)
TINY_LOGS = ["--dataset", "x", "--train", "a.csv", "--test", "dos=b.csv"]


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
        "stash", "stash prune",
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
        (["--set", "training.gat=3"], "kd_gat.training.gat: expected a mapping, got int"),
        (["--set", "training=3"], "kd_gat.training: expected a mapping, got int"),
    ],
)
def test_bad_settings_fail_naming_the_key(args, message, tmp_path, stderr_text):
    code = main(["train", "gat", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--vgae", "v", *args])
    assert code in (1, 2) and message in stderr_text()
    assert "Traceback" not in stderr_text()  # the message is the whole story


def test_a_tracked_train_run_is_tagged_with_the_catalogs_commit_as_a_workflow_job_is(
    tmp_path, capsys, monkeypatch
):
    """README: runs are tagged with the git commit, and `kdgat train` tracks the same way. The workflow puts the
    commit in KDGAT_SOURCE_COMMIT for its jobs; the command, started by hand, tagged no commit at all."""
    import subprocess

    monkeypatch.delenv("KDGAT_SOURCE_COMMIT", raising=False)
    argv = ["train", "vgae", "--variant", "teacher", "--data", str(tmp_path), "--out", str(tmp_path / "out"),
            "--tracking", "mlflow", "--tracking-uri", str(tmp_path / "mlruns"), "--print-settings"]  # fmt: skip
    assert main(argv) == 0
    tags = json.loads(capsys.readouterr().out)["tracking"]["tags"]
    checkout = Path(__import__("kdgat").__file__).parent
    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert tags["mlflow.source.git.commit"] == commit.stdout.strip() != ""
    monkeypatch.setenv("KDGAT_SOURCE_COMMIT", "0123abcd")  # what a workflow job is given wins, as in the job
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["tracking"]["tags"]["mlflow.source.git.commit"] == "0123abcd"


def test_train_writes_into_the_chain_without_out_and_evaluate_needs_out(capsys):
    """README.md: "`kdgat train` without `--out` writes its outputs there [the --chain folder] too, `kdgat evaluate`
    always needs its `--out`" (it once read as if both wrote into the chain)."""
    readme = " ".join((REPO / "README.md").read_text().split())
    assert (
        "`kdgat train` without `--out` writes its outputs there too, `kdgat evaluate` always needs its `--out`"
        in (readme)
    )
    train = [
        "train",
        "gat",
        "--data",
        "d",
        "--chain",
        "c",
        "--variant",
        "student",
        "--seed",
        "5",
        "--print-settings",
    ]
    assert main(train) == 0
    assert json.loads(capsys.readouterr().out)["outputs"]["model"] == "c/seed_5/student/gat/model.pt"
    with pytest.raises(SystemExit) as refused:
        main(["evaluate", "--dataset", "x", "--variant", "student", "--data", "d", "--chain", "c"])
    assert refused.value.code == 2
    assert "the following arguments are required: --out" in capsys.readouterr().err


def test_a_flag_wins_over_set_which_wins_over_the_config(tmp_path, capsys):
    """kd_gat section alone in the file: every setting the stage reads is given by the config and overridden by
    --set, and some of them by a flag too; and the DQN's inputs follow kd_gat.dqn's splits and the variant."""
    config = tmp_path / "kd_gat.yaml"
    config.write_text(yaml.safe_dump({
        "seeds": [7, 8], "student_preset": "student", "resources": {"threads": 3},
        "training": {"dqn": {"epochs": 7, "lr": 0.5, "patience": 4}, "gat": {"epochs": 9}},
        "tracking": {"backend": "mlflow", "experiment": "from_config"},
    }))  # fmt: skip
    base = ["train", "dqn", "--config", config, "--variant", "student_kd", "--data", "d", "--chain", "c",
            "--print-settings"]  # fmt: skip

    def printed(*extra) -> dict:
        assert main([str(a) for a in (*base, *extra)]) == 0
        return json.loads(capsys.readouterr().out)

    given = printed("--set", "training.dqn.epochs=5", "--set", "training.dqn.lr=0.1", "--epochs", "2",
                    "--preset", "demo_student", "--seed", "3", "--threads", "2", "--tracking", "none",
                    "--set", "dqn.fit_split=fusion", "--set", "dqn.stop_split=val", "--checkpoint", "ck.pt")  # fmt: skip
    training = given["settings"]["training"]
    assert (training["epochs"], training["lr"], training["patience"]) == (2, 0.1, 4)  # flag, --set, config
    assert given["settings"]["preset"] == "demo_student" and given["settings"]["seed"] == 3
    assert given["threads"] == 2 and given["checkpoint"] == "ck.pt"
    assert given["tracking"]["backend"] == "none" and given["tracking"]["experiment"] == "from_config"
    own, teacher = "c/seed_3/student_kd", "c/seed_3/teacher"
    assert given["inputs"] == {
        "metadata": "d/metadata.json", "fit": "d/fusion.pt", "stop": "d/val.pt",
        "vgae": f"{own}/vgae/model.pt", "gat": f"{own}/gat/model.pt",
        **{f"teacher_{name}": f"{teacher}/{name}/model.pt" for name in ("dqn", "vgae", "gat")},
    }  # fmt: skip
    assert given["outputs"]["model"] == f"{own}/dqn/model.pt"

    defaults = printed("--no-checkpoint")
    assert defaults["settings"]["training"]["epochs"] == 7 and defaults["settings"]["preset"] == "student"
    assert defaults["settings"]["seed"] == 7 and defaults["threads"] == 3 and defaults["checkpoint"] is None
    assert defaults["tracking"]["backend"] == "mlflow"
    assert defaults["inputs"]["fit"] == "d/val.pt" and defaults["inputs"]["stop"] is None  # blocks of fit
    assert defaults["outputs"]["model"] == "c/seed_7/student_kd/dqn/model.pt"
    teacher_preset = printed("--variant", "teacher", "--preset", "demo_teacher")["settings"]
    assert teacher_preset["preset"] == "demo_teacher" and teacher_preset["variant"] == "teacher"


@pytest.mark.parametrize(
    ("flag", "override", "key"),
    [(["--epochs", "3"], "epochs=5", "epochs"), (["--batch-size", "16"], "batch_size=8", "batch_size")],
)
def test_a_training_setting_given_by_its_flag_and_by_override_is_refused_naming_both(
    flag, override, key, tmp_path, stderr_text
):
    # --override epochs=5 --epochs 3 trained 5 epochs without a word, though flags are said to win over settings.
    args = ["train", "vgae", "--data", "d", "--out", str(tmp_path / "o"), "--print-settings"]
    assert main([*args, *flag, "--override", override]) == 2
    assert (
        stderr_text()
        .rstrip()
        .endswith(
            f"kdgat train vgae: {flag[0]} {flag[1]} and --override {override} both set kd_gat.training.vgae.{key}: "
            "give one of them"
        )
    )
    assert "Traceback" not in stderr_text()


def test_train_dqn_batch_size_sets_the_transitions_per_update_the_dqn_stage_reads(tmp_path, capsys):
    """The DQN stage updates its Q-network on kd_gat.dqn.batch_size replayed transitions and reads no
    kd_gat.training.dqn.batch_size: `kdgat train dqn --batch-size 16` set that one, trained as before and its help
    said "graphs per optimisation step"."""
    args = ["train", "dqn", "--data", "d", "--vgae", "v", "--gat", "g", "--out", str(tmp_path / "o"),
            "--tracking", "none", "--print-settings"]  # fmt: skip
    assert main([*args, "--batch-size", "16"]) == 0
    settings = json.loads(capsys.readouterr().out)["settings"]
    assert settings["dqn"]["batch_size"] == 16 and settings["training"] == json.loads(
        json.dumps(StageSettings.from_config({}, "dqn", "teacher").as_dict()["training"])
    )
    option = next(a for a in COMMANDS[("train", "dqn")]._actions if "--batch-size" in a.option_strings)
    assert option.help == "transitions per update of the Q-network (kd_gat.dqn.batch_size)"


def test_one_setting_given_twice_by_override_is_refused_naming_both(tmp_path, stderr_text):
    # --override epochs=5 --override epochs=3 trained 3 epochs without a word: the last one won.
    args = ["train", "vgae", "--data", "d", "--out", str(tmp_path / "o"), "--print-settings"]
    assert main([*args, "--override", "epochs=5", "--override", "epochs=3"]) == 2
    assert (
        stderr_text()
        .rstrip()
        .endswith(
            "kdgat train vgae: --override epochs=5 and --override epochs=3 both set epochs: give one of them"
        )
    )


def test_override_replaces_a_setting_of_set_as_a_sweep_column_replaces_the_config(capsys):
    # A sweep row's value (what --override gives) replaces the config's, as in the workflow; --set is config.
    args = ["train", "vgae", "--data", "d", "--out", "o", "--print-settings"]
    assert main([*args, "--set", "training.vgae.epochs=5", "--override", "epochs=2", "--lr", "0.01"]) == 0
    training = json.loads(capsys.readouterr().out)["settings"]["training"]
    assert (training["epochs"], training["lr"]) == (2, 0.01)


def recorded_evaluations(monkeypatch) -> list[dict]:
    """The keyword arguments of each evaluate_files call the command makes, which records them instead of
    evaluating."""
    import functools

    from kdgat.evaluation import run as evaluation_run

    calls = []

    @functools.wraps(evaluation_run.evaluate_files)  # the command reads its signature
    def recording(**kwargs):
        calls.append(kwargs)
        return {}

    monkeypatch.setattr(evaluation_run, "evaluate_files", recording)
    return calls


def test_evaluate_takes_the_config_then_set_then_flags_and_the_models_of_the_seed(tmp_path, monkeypatch):
    calls = recorded_evaluations(monkeypatch)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "kd_gat": {"seeds": [7, 8]},
        "evaluation": {"batch_size": 8, "threads": 2, "device": "cpu", "fpr_targets": [0.1]},
    }))  # fmt: skip
    base = ["evaluate", "--config", str(config), "--dataset", "x", "--variant", "student", "--chain", "c",
            "--data", "d", "--out", "o", "--tracking", "none"]  # fmt: skip
    assert main([*base, "--set", "batch_size=16", "--set", "fpr_targets=[0.2]", "--batch-size", "32"]) == 0
    assert calls[-1]["batch_size"] == 32 and calls[-1]["fpr_targets"] == [0.2]  # flag, then --set
    assert calls[-1]["threads"] == 2 and calls[-1]["device"] == "cpu" and calls[-1]["seed"] == 7
    assert {name: calls[-1][name] for name in ("vgae", "gat", "dqn", "val", "test")} == {
        **{name: f"c/seed_7/student/{name}/model.pt" for name in ("vgae", "gat", "dqn")},
        "val": "d/val.pt", "test": "d/test.pt",
    }  # fmt: skip
    assert main([*base, "--seed", "8", "--threads", "4", "--device", "cuda:1"]) == 0
    assert calls[-1]["seed"] == 8 and calls[-1]["threads"] == 4 and calls[-1]["device"] == "cuda:1"
    assert calls[-1]["vgae"] == "c/seed_8/student/vgae/model.pt"
    # A workflow config that leaves the evaluation section out: its defaults, and kd_gat.seeds still read.
    config.write_text(yaml.safe_dump({"datasets": {}, "kd_gat": {"seeds": [5]}}))
    assert main(base) == 0
    assert calls[-1]["seed"] == 5 and "batch_size" not in calls[-1]


def test_baselines_take_the_fpr_targets_of_the_config_then_set_then_the_flag(tmp_path, monkeypatch):
    from kdgat.evaluation import baselines

    calls = []
    monkeypatch.setattr(baselines, "baselines_files", lambda **kwargs: calls.append(kwargs) or {})
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"evaluation": {"fpr_targets": [0.1], "batch_size": 8}}))
    base = ["baselines", "--config", str(config), "--dataset", "x", "--data", "d", "--out", "o"]
    assert main(base) == 0 and calls[-1]["fpr_targets"] == [0.1]
    assert main([*base, "--set", "fpr_targets=[0.2]"]) == 0 and calls[-1]["fpr_targets"] == [0.2]
    assert main([*base, "--set", "fpr_targets=[0.2]", "--fpr-targets", "0.3"]) == 0
    assert calls[-1]["fpr_targets"] == [0.3] and calls[-1]["train"] == "d/train.pt"


def test_a_list_option_given_twice_keeps_every_value_not_the_last_only(tmp_path, monkeypatch):
    """`--train a.csv --train b.csv` (or --test, --metrics, --baselines, --history, --fpr-targets twice): argparse
    kept the last list only, so a training log or an evaluation was left out without a word."""
    import functools

    from kdgat import preprocess
    from kdgat.evaluation import baselines
    from kdgat.evaluation import run as evaluation_run

    calls = {}

    def recording(name, function):
        @functools.wraps(function)  # the commands read the signatures
        def record(**kwargs):
            calls[name] = kwargs
            return {}

        return record

    monkeypatch.setattr(
        preprocess, "preprocess_dataset", recording("preprocess", preprocess.preprocess_dataset)
    )
    monkeypatch.setattr(
        evaluation_run, "summarize_files", recording("summarize", evaluation_run.summarize_files)
    )
    monkeypatch.setattr(
        evaluation_run, "evaluate_files", recording("evaluate", evaluation_run.evaluate_files)
    )
    monkeypatch.setattr(baselines, "baselines_files", recording("baselines", baselines.baselines_files))
    for name in ("g.csv", "v.csv"):
        (tmp_path / name).write_text("epoch\n")
    out = str(tmp_path / "o")
    assert main(["preprocess", "--dataset", "x", "--train", "a.csv", "--train", "b.csv", "c.csv",
                 "--test", "dos=d.csv", "--test", "rpm=e.csv", "--out", out]) == 0  # fmt: skip
    assert calls["preprocess"]["train_files"] == ["a.csv", "b.csv", "c.csv"]
    assert calls["preprocess"]["test_files"] == [("dos", "d.csv"), ("rpm", "e.csv")]
    history = [f"teacher/gat={tmp_path / 'g.csv'}", f"teacher/vgae={tmp_path / 'v.csv'}"]
    assert main(["summarize", "--metrics", "m1.json", "--metrics", "m2.json", "--baselines", "b1.json",
                 "--baselines", "b2.json", "--history", history[0], "--history", history[1], "--out", out]) == 0  # fmt: skip
    assert calls["summarize"]["metrics"] == ["m1.json", "m2.json"]
    assert calls["summarize"]["baselines"] == ["b1.json", "b2.json"]
    assert calls["summarize"]["history_keys"] == ["teacher/gat", "teacher/vgae"]
    evaluate = [
        "evaluate",
        "--dataset",
        "x",
        "--variant",
        "teacher",
        "--chain",
        "c",
        "--data",
        "d",
        "--out",
        out,
    ]
    assert main([*evaluate, "--fpr-targets", "0.1", "--fpr-targets", "0.05", "--tracking", "none"]) == 0
    assert calls["evaluate"]["fpr_targets"] == [0.1, 0.05]
    baseline = ["baselines", "--dataset", "x", "--data", "d", "--out", out]
    assert main([*baseline, "--fpr-targets", "0.1", "--fpr-targets", "0.05"]) == 0
    assert calls["baselines"]["fpr_targets"] == [0.1, 0.05]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "dqn", "--set", "seeds=7"], "kd_gat.seeds must be a list of integer seeds, got 7"),
        (["train", "dqn", "--set", "seeds=[abc]"], "kd_gat.seeds must be a list of integer seeds, got ['abc']"),
        (["evaluate", "--set", "nosuch=1"], "evaluation: unknown keys ['nosuch']"),
        (["baselines", "--set", "fpr_target=[0.1]"], "evaluation: unknown keys ['fpr_target']"),
        (["train", "dqn", "--threads", "0"], "--threads must be an integer >= 1, got 0"),
        (["train", "dqn", "--set", "resources.threads=-1"], "kd_gat.resources.threads must be an integer >= 1, got -1"),
        # An AttributeError traceback; a misspelt key (the schema's additionalProperties: false) gave torch's threads.
        (["train", "dqn", "--set", "resources=4"], "kd_gat.resources must be a mapping, got 4"),
        (["train", "dqn", "--set", "resources.thread=4"],
         "kd_gat.resources: unknown keys ['thread']; known: ['mem_mb', 'runtime', 'threads']"),
        (["evaluate", "--threads", "-2"], "--threads must be an integer >= 1, got -2"),
        (["evaluate", "--set", "threads=many"], "evaluation.threads must be an integer >= 1, got 'many'"),
        (["train", "dqn", "--device", "gpu"], "--device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        (["train", "dqn", "--set", "device=cuda0"], "kd_gat.device must be auto, cpu, cuda or cuda:N, got 'cuda0'"),
        (["evaluate", "--device", "gpu"], "--device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        # Accepted (exit 0), and metrics.json then held no detection rate at all; the schema's minItems is 1.
        (["evaluate", "--set", "fpr_targets=[]"], "evaluation.fpr_targets is empty: give at least one false-posit"),
        (["baselines", "--set", "fpr_targets=[]"], "evaluation.fpr_targets is empty: give at least one false-posit"),
        # FileExistsError naming neither the option nor the key, after the whole evaluation.
        (["evaluate", "--stash-dir", "a_file"], "--stash-dir a_file is a file; give a folder"),
        (["evaluate", "--set", "stash_dir=a_file"], "evaluation.stash_dir a_file is a file; give a folder"),
        # torch's "batch_size should be a positive integer value, but got batch_size=0", after loading everything.
        (["evaluate", "--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
        (["evaluate", "--set", "batch_size=many"], "evaluation.batch_size must be an integer >= 1, got 'many'"),
        (["evaluate", "--set", "batch_size=true"], "evaluation.batch_size must be an integer >= 1, got True"),
        # A flag that lands under a config value that is no mapping (a traceback before).
        (["train", "dqn", "--set", "training=5", "--epochs", "3"],
         "kd_gat.training is 5, not a mapping: a flag sets kd_gat.training.dqn.epochs"),
        (["train", "dqn", "--set", "training.dqn=[1]", "--lr", "0.1"],
         "kd_gat.training.dqn is [1], not a mapping: a flag sets kd_gat.training.dqn.lr"),
        (["train", "dqn", "--set", "tracking=5", "--tracking", "mlflow"], "kd_gat.tracking must be a mapping, got 5"),
        (["train", "dqn", "--set", "tracking=[1]"], "kd_gat.tracking must be a mapping, got [1]"),
        # A boolean is no integer here, though Python's bool is one (True would be 1 thread, or seed 1).
        (["train", "dqn", "--set", "seeds=[true]"], "kd_gat.seeds must be a list of integer seeds, got [True]"),
        (["evaluate", "--set", "threads=true"], "evaluation.threads must be an integer >= 1, got True"),
        # A --set that goes below a value which is no mapping (an AttributeError traceback otherwise).
        (["evaluate", "--set", "speed=5", "--set", "speed.repeats=3"],
         "--set speed.repeats: evaluation.speed is 5, not a mapping"),
        (["preprocess", "--test", "dos="], "--test expects NAME=FILE, got 'dos='"),
        (["summarize", "--history", "teacher/gnn=a_file"], "--history teacher/gnn=...: expected <variant>/<stage>"),
    ],
)  # fmt: skip
def test_bad_command_line_values_fail_at_once_naming_the_option_or_key(
    args, message, tmp_path, monkeypatch, stderr_text
):
    where = {
        "train": ["--data", str(tmp_path), "--vgae", "v", "--gat", "g"],
        "evaluate": ["--dataset", "x", "--variant", "teacher", "--data", str(tmp_path), "--chain", "c"],
        "baselines": ["--dataset", "x", "--data", str(tmp_path)],
        "preprocess": ["--dataset", "x", "--train", "a.csv", "--test", "dos=b.csv"],
        "summarize": ["--metrics", "m.json"],
    }[args[0]]
    monkeypatch.chdir(tmp_path)
    Path("a_file").write_text("")
    assert main([*args, *where, "--out", str(tmp_path / "o")]) == 2
    assert message in stderr_text() and "Traceback" not in stderr_text()
    assert not (tmp_path / "o").exists()


def test_the_resources_keys_kdgat_train_accepts_are_the_kd_gat_schemas():
    resources = schema("kd_gat")["properties"]["kd_gat"]["properties"]["resources"]
    assert resources["additionalProperties"] is False and list(resources["properties"]) == list(RESOURCE_KEYS)


def test_an_unreadable_settings_file_or_log_is_named(tmp_path, stderr_text):
    args = ["train", "vgae", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--print-settings"]
    binary = tmp_path / "latin1.yaml"
    binary.write_bytes("device: caf\xe9\n".encode("latin-1"))
    assert main([*args, "--config", str(binary)]) == 2
    assert f"settings file {binary} cannot be read as text" in stderr_text()
    assert main([*args, "--config", str(tmp_path)]) == 2
    assert f"settings file {tmp_path} cannot be read as text" in stderr_text()
    (tmp_path / "a_file").write_text("")
    assert main([*args, "--log", str(tmp_path / "a_file" / "job.log")]) == 2  # no folder can be made there
    assert f"--log {tmp_path / 'a_file' / 'job.log'} cannot be written" in stderr_text()
    assert "Traceback" not in stderr_text()


def test_the_log_file_is_appended_to_so_a_rerun_keeps_the_earlier_attempts_record(tmp_path, stderr_text):
    """--log "also append[s] the log to FILE (as the workflow's rule log)": the run that resumes a killed training
    must not wipe the log of the attempt it resumes."""
    log = tmp_path / "job.log"
    args = ["train", "vgae", "--out", str(tmp_path / "o"), "--print-settings", "--log", str(log)]
    assert main(args) == 2
    assert main(args) == 2
    said = [line for line in log.read_text().splitlines() if "metadata.json is needed" in line]
    assert len(said) == 2, log.read_text()


def test_a_workflow_config_whose_kd_gat_is_no_mapping_is_named_by_evaluate(tmp_path, stderr_text):
    config = tmp_path / "config.yaml"
    config.write_text("kd_gat: 5\nevaluation: {}\n")  # evaluate reads kd_gat.tracking beside its own section
    args = ["evaluate", "--config", str(config), "--dataset", "x", "--variant", "teacher", "--seed", "1"]
    assert main([*args, "--data", str(tmp_path), "--chain", "c", "--out", str(tmp_path / "o")]) == 2
    assert f"{config}: config key 'kd_gat' must be a mapping" in stderr_text()
    assert "Traceback" not in stderr_text()


def test_the_commands_know_the_workflows_config_sections_and_devices():
    schemas = [*MODULES.glob("*/schemas/config.schema.yaml"), REPO / "workflow/schemas/config.schema.yaml"]
    sections = {key for path in schemas for key in yaml.safe_load(path.read_text())["properties"]}
    assert set(WORKFLOW_SECTIONS) == sections
    for module in ("kd_gat", "evaluation"):
        assert schema(module)["properties"][module]["properties"]["device"]["pattern"] == DEVICE_PATTERN


def test_the_device_pattern_takes_exactly_the_gpu_indices_torch_reads_as_written():
    """torch keeps a device index in 8 bits: the pattern cuda(:[0-9]+)? took cuda:255, which torch reads as cuda
    (GPU 0, without a word), and cuda:128 (cuda:-128); and cuda:01, which torch refuses only when the job runs."""
    import torch

    for index in range(1000):
        for written in (str(index), f"0{index}"):
            spec = f"cuda:{written}"
            try:
                as_written = torch.device(spec).index == int(written) and written == str(index)
            except RuntimeError:
                as_written = False
            assert bool(re.fullmatch(DEVICE_PATTERN, spec)) == as_written, spec
    assert all(re.fullmatch(DEVICE_PATTERN, spec) for spec in ("auto", "cpu", "cuda", "cuda:0", "cuda:127"))


def test_the_set_example_of_each_commands_help_is_a_key_of_its_own_section():
    """`kdgat evaluate --help` (and preprocess, baselines) gave `--set training.gat.epochs=5` as its example, a key of
    kd_gat that those sections refuse ("evaluation: unknown keys ['training']")."""
    checked = set()
    for name, command in COMMANDS.items():
        (option,) = [a for a in command._actions if "--set" in a.option_strings] or [None]
        if option is None:
            continue
        section = re.search(r"setting of the (\w+) section", option.help).group(1)
        example = re.search(r"\(e\.g\. ([\w.]+)=\S+\)", option.help).group(1)
        whole = schema(section)
        node = whole["properties"][section]
        for key in example.split("."):
            if "$ref" in node:  # "#/$defs/<name>"
                node = whole["$defs"][node["$ref"].rsplit("/", 1)[1]]
            assert key in node["properties"], (" ".join(name), example)
            node = node["properties"][key]
        checked.add(section)
    assert checked == {"preprocess", "kd_gat", "evaluation"}


def test_missing_inputs_name_the_option_and_missing_files_the_file(tmp_path, stderr_text):
    assert main(["train", "dqn", "--out", str(tmp_path)]) == 2
    assert "metadata.json is needed: give --metadata or --data" in stderr_text()
    args = ["train", "vgae", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--device", "cpu"]
    assert main(args) == 1
    assert (
        f"input 'metadata' of the training job does not exist: {tmp_path}/metadata.json (the preprocess "
        "metadata.json with 'num_ids')" in stderr_text()
    )
    assert main(["train", "gat", "--variant", "student_kd", "--data", "d", "--out", "o"]) == 2
    assert "the teacher's gat model (student_kd) is needed: give --teacher or --chain" in stderr_text()
    assert main(["train", "gat", "--data", "d", "--out", "o"]) == 2  # the curriculum needs the VGAE
    assert "the same variant's VGAE (kd_gat.curriculum.enabled) is needed: give --vgae" in stderr_text()
    no_curriculum = ["train", "gat", "--data", "d", "--out", "o", "--set", "curriculum.enabled=false"]
    assert main([*no_curriculum, "--print-settings"]) == 0
    dqn = ["train", "dqn", "--variant", "student_kd", "--data", "d", "--vgae", "v", "--gat", "g", "--out", "o"]  # fmt: skip
    assert main([*dqn, "--teacher-dqn", "t", "--teacher-vgae", "t"]) == 2
    assert "the teacher's gat model (student_kd) is needed: give --teacher-gat or --chain" in stderr_text()


def test_an_out_that_is_a_file_or_a_checkpoint_that_is_a_folder_fails_before_training(tmp_path, stderr_text):
    # Before, both trained first and then failed writing, naming a temporary file or none of the options.
    (tmp_path / "a_file").write_text("")
    args = ["train", "vgae", "--data", str(tmp_path), "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "a_file")]) == 2
    assert f"--out {tmp_path / 'a_file'} is a file; give a folder" in stderr_text()
    assert main([*args, "--out", str(tmp_path / "o"), "--checkpoint", str(tmp_path)]) == 2
    assert f"--checkpoint {tmp_path} is a folder; give a file" in stderr_text()
    # The checkpoint is removed after success: naming the job's own model.pt (or an input) would delete it.
    out = tmp_path / "o"
    assert main([*args, "--out", str(out), "--checkpoint", str(out / "model.pt")]) == 2
    assert f"--checkpoint {out / 'model.pt'} is also the job's model file" in stderr_text()
    assert main([*args, "--out", str(out), "--checkpoint", str(tmp_path / "val.pt")]) == 2
    assert f"--checkpoint {tmp_path / 'val.pt'} is also the job's val file" in stderr_text()
    assert "Traceback" not in stderr_text() and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        (["--no-checkpoint", "--checkpoint", "ck.pt"], "argument --checkpoint: not allowed with argument --no-checkpoint"),
        (["--checkpoint", "ck.pt", "--no-checkpoint"], "argument --no-checkpoint: not allowed with argument --checkpoint"),
    ],
    ids=["no-checkpoint-first", "checkpoint-first"],
)  # fmt: skip
def test_no_checkpoint_with_a_checkpoint_is_refused_naming_both_not_the_checkpoint_ignored(
    pair, message, tmp_path, capsys
):
    # The pair trained without a checkpoint, ignoring the path given, so the run the user meant to resume could not.
    with pytest.raises(SystemExit) as refused:
        main(["train", "vgae", "--data", "d", "--out", str(tmp_path / "o"), *pair, "--print-settings"])
    assert refused.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.rstrip().endswith(f"kdgat train vgae: error: {message}") and captured.out == ""
    assert "[--checkpoint CHECKPOINT | --no-checkpoint]" in COMMANDS[("train", "vgae")].format_usage()


@pytest.mark.parametrize(
    ("command", "option"),
    [
        (["preprocess", "--dataset", "x", "--train", "a.csv", "--test", "dos=b.csv"], "--out"),
        (["evaluate", "--dataset", "x", "--variant", "teacher", "--chain", "c", "--data", "d"], "--out"),
        (["evaluate", "--dataset", "x", "--variant", "teacher", "--chain", "c", "--out", "o"], "--data"),
        (["baselines", "--dataset", "x", "--data", "d"], "--out"),
        (["baselines", "--dataset", "x", "--out", "o"], "--data"),
        (["summarize", "--metrics", "m.json"], "--out"),
    ],
)
def test_a_folder_option_that_names_a_file_fails_at_once_naming_the_option(
    command, option, tmp_path, stderr_text
):
    """Before, the command did its work (an evaluation: every scenario scored) and then failed writing, with
    `FileExistsError: [Errno 17] File exists: 'o'` or, for --data, `Not a directory: 'd/metadata.json'`."""
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert main([*command, option, str(a_file)]) == 2
    assert f"{option} {a_file} is a file; give a folder" in stderr_text() and "Traceback" not in stderr_text()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        # Wrote valid.pt and no fusion.pt, exit 0; the workflow's schema refuses the key.
        ("held_out.valid=0.2", "preprocess.held_out: unknown splits ['valid']; known: ['fusion']"),
        # Read letter by letter: every log whose name holds a d, an o or an s was left out.
        (
            "exclude=dos",
            "preprocess.exclude must be a list of words (e.g. [suppress, masquerade]), got 'dos'",
        ),
        (
            "exclude=[1, 2]",
            "preprocess.exclude must be a list of words (e.g. [suppress, masquerade]), got [1, 2]",
        ),
        # Every path contains "": with --path every log was left out ("has no CAN logs ... under train_*/").
        ('exclude=[""]', "kdgat preprocess: preprocess.exclude[0]: an empty word drops every log"),
        ('exclude=[suppress, ""]', "kdgat preprocess: preprocess.exclude[1]: an empty word drops every log"),
    ],
)
def test_preprocess_settings_the_schema_refuses_are_refused_by_the_command(
    setting, message, tmp_path, stderr_text
):
    args = ["preprocess", *TINY_LOGS, "--out", str(tmp_path / "o")]
    assert main([*args, "--set", setting]) == 2
    assert message in stderr_text() and "Traceback" not in stderr_text()


def test_evaluate_refuses_model_files_given_in_each_others_place(tmp_path, stderr_text):
    """Before, `--vgae <the GAT's model.pt>` ran until the evaluation asked the model for VGAE scores:
    "AttributeError: 'GAT' object has no attribute 'graph_errors'" with a traceback."""
    from kdgat.model_store import save_model
    from kdgat.models import GAT, QNetwork

    gat, dqn = tmp_path / "gat.pt", tmp_path / "dqn.pt"
    save_model(GAT(20), "gat", {"num_ids": 20}, gat)
    save_model(QNetwork(), "dqn", {}, dqn)
    args = [
        "evaluate",
        "--dataset",
        "x",
        "--variant",
        "teacher",
        "--data",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main([*args, "--vgae", str(gat), "--gat", str(gat), "--dqn", str(dqn)]) == 1
    assert f"{gat}: a kd_gat gat model, given where the vgae model is expected" in stderr_text()
    assert "Traceback" not in stderr_text() and not (tmp_path / "o").exists()


def test_summarize_refuses_a_history_panel_given_twice_or_a_missing_history_before_writing(
    tmp_path, stderr_text
):
    """A second teacher/gat history replaced the first in the chart without a word; a missing history.csv was
    found only after summary.csv, summary.md, scenario_metrics.csv and size_f1.svg were written."""
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    for path in (first, second):
        path.write_text("epoch,train_loss\n1,0.5\n")
    args = ["summarize", "--metrics", str(tmp_path / "metrics.json"), "--out", str(tmp_path / "o")]
    assert main([*args, "--history", f"teacher/gat={first}", f"teacher/gat={second}"]) == 2
    assert (
        f"--history teacher/gat is given twice ({first}, {second}); one history.csv per panel"
        in stderr_text()
    )
    assert main([*args, "--history", f"teacher/gat={first}", f"student/gat={tmp_path / 'missing.csv'}"]) == 2
    assert f"--history student/gat={tmp_path / 'missing.csv'}: no such file" in stderr_text()
    assert "Traceback" not in stderr_text() and not (tmp_path / "o").exists()


def test_evaluate_refuses_data_of_another_preprocess_run_than_the_models(tmp_path, monkeypatch, stderr_text):
    """`--data results/preprocess/a --chain results/kd_gat/b` scored b's models on a's graphs and exited 0: node
    indices from another vocabulary, numbers without meaning. The models' trained_on digest names their train.pt."""

    from kdgat.files import file_sha256
    from kdgat.graph_store import save_graphs
    from kdgat.model_store import save_model
    from kdgat.models import GAT, VGAE, QNetwork
    from kdgat.testing import toy_graphs

    calls = recorded_evaluations(monkeypatch)
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    save_graphs(toy_graphs(4, num_ids=20, seed=0), ours / "train.pt")
    save_graphs(toy_graphs(4, num_ids=20, seed=1), theirs / "train.pt")
    chain = tmp_path / "chain" / "seed_42" / "teacher"
    digest = file_sha256(ours / "train.pt")
    save_model(VGAE(20), "vgae", {"num_ids": 20}, chain / "vgae" / "model.pt", trained_on=digest)
    save_model(GAT(20), "gat", {"num_ids": 20}, chain / "gat" / "model.pt", trained_on=digest)
    save_model(QNetwork(), "dqn", {}, chain / "dqn" / "model.pt")
    args = ["evaluate", "--dataset", "x", "--variant", "teacher", "--chain", str(tmp_path / "chain"),
            "--out", str(tmp_path / "o"), "--tracking", "none"]  # fmt: skip
    assert main([*args, "--data", str(theirs)]) == 2
    assert (
        f"the vgae model {chain / 'vgae' / 'model.pt'} was trained on another train.pt than {theirs / 'train.pt'}"
        in stderr_text()
    )
    # --val alone: the test graphs are still --data's.
    assert main([*args, "--data", str(theirs), "--val", str(theirs / "val.pt")]) == 2
    assert not calls
    assert main([*args, "--data", str(ours)]) == 0 and calls[-1]["val"] == str(ours / "val.pt")
    # Named one by one, other graphs are scored: the user says so.
    assert main([*args, "--val", str(theirs / "val.pt"), "--test", str(theirs / "test.pt")]) == 0
    assert len(calls) == 2 and "Traceback" not in stderr_text()
    # The GAT is checked as the VGAE is.
    gat = chain / "gat" / "model.pt"
    save_model(GAT(20), "gat", {"num_ids": 20}, gat, trained_on=file_sha256(theirs / "train.pt"))
    assert main([*args, "--data", str(ours)]) == 2 and len(calls) == 2
    assert f"the gat model {gat} was trained on another train.pt than {ours / 'train.pt'}" in stderr_text()


def test_train_refuses_models_of_another_preprocess_run_than_its_graphs(tmp_path, monkeypatch, stderr_text):
    """`kdgat train gat --data a --vgae <b's VGAE>` and `train dqn --data a --chain b` trained on a's graphs with
    models that learnt b's vocabulary and exited 0: same ID indices, other CAN IDs. Refused before training, naming
    both files (the models' trained_on digest, or the vocabulary digest graph files and models record)."""
    from kdgat.files import file_sha256
    from kdgat.graph_store import save_graphs
    from kdgat.model_store import save_model
    from kdgat.models import GAT, VGAE
    from kdgat.testing import toy_graphs
    from kdgat.training import dqn

    runs = []
    monkeypatch.setattr(dqn, "run", lambda **kwargs: runs.append(kwargs) or {})
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for folder, seed in ((ours, 0), (theirs, 1)):
        for split in ("train", "val", "fusion"):
            save_graphs(toy_graphs(4, num_ids=20, seed=seed), folder / f"{split}.pt", vocabulary=folder.name)
        (folder / "metadata.json").write_text(
            json.dumps({"num_ids": 20, "vocabulary": {"digest": folder.name}})
        )
    chain = tmp_path / "chain" / "seed_42" / "teacher"
    digest = file_sha256(ours / "train.pt")
    save_model(
        VGAE(20), "vgae", {"num_ids": 20}, chain / "vgae" / "model.pt", trained_on=digest, vocabulary="ours"
    )
    save_model(
        GAT(20), "gat", {"num_ids": 20}, chain / "gat" / "model.pt", trained_on=digest, vocabulary="ours"
    )
    common = ["--chain", str(tmp_path / "chain"), "--tracking", "none", "--epochs", "1"]

    out = tmp_path / "gat"
    assert main(["train", "gat", "--data", str(theirs), "--out", str(out), *common]) == 1
    assert f"{chain / 'vgae' / 'model.pt'} (vgae model) was trained on another train.pt than this job's" in (
        stderr_text()
    )
    assert str(theirs / "train.pt") in stderr_text() and not out.exists()

    assert main(["train", "dqn", "--data", str(theirs), "--out", str(tmp_path / "dqn"), *common]) == 2
    assert f"{chain / 'vgae' / 'model.pt'} (--vgae) was trained on another train.pt than this job's" in (
        stderr_text()
    )
    assert not runs
    assert main(["train", "dqn", "--data", str(ours), "--out", str(tmp_path / "dqn"), *common]) == 0 and runs
    # A student_kd DQN distils from the teacher's models: they too must have learnt --data's train.pt.
    distilled = ["train", "dqn", "--variant", "student_kd", "--out", str(tmp_path / "kd"), *common]
    assert main([*distilled, "--data", str(theirs)]) == 2 and len(runs) == 1
    assert f"{chain / 'vgae' / 'model.pt'} (--teacher-vgae) was trained on another train.pt" in stderr_text()
    # Without --data, the library call compares the vocabulary the graphs and models record.
    with pytest.raises(
        ValueError, match=r"fusion.pt \(fit\) and .*metadata.json \(metadata\) are of different"
    ):
        check_fit = {"fit": theirs / "fusion.pt"}
        from kdgat.training.data import check_one_preprocess_run

        check_one_preprocess_run(check_fit, {"vgae": chain / "vgae" / "model.pt"}, ours / "metadata.json")
    with pytest.raises(ValueError, match=r"model.pt \(vgae\) and .*fusion.pt \(fit\) are of different"):
        check_one_preprocess_run({"fit": theirs / "fusion.pt"}, {"vgae": chain / "vgae" / "model.pt"})
    assert "Traceback" not in stderr_text()


def test_baselines_refuse_a_test_file_of_another_preprocess_run(tmp_path, monkeypatch, stderr_text):
    """A test.pt copied from another preprocess run (same number of IDs, another vocabulary) was scored without an
    error; refused naming both files. Files that record no vocabulary (written before it was recorded) are scored,
    with a warning saying they were not checked."""
    from kdgat.evaluation import baselines
    from kdgat.graph_store import save_graph_sets, save_graphs
    from kdgat.testing import toy_graphs

    calls = []
    monkeypatch.setattr(baselines, "baselines_files", lambda **kwargs: calls.append(kwargs) or {})
    data = tmp_path / "data"
    for split in ("train", "val"):
        save_graphs(toy_graphs(4, num_ids=20, seed=0), data / f"{split}.pt", vocabulary="ours")
    save_graph_sets({"dos": toy_graphs(4, num_ids=20, seed=1)}, data / "test.pt", vocabulary="theirs")
    (data / "metadata.json").write_text(json.dumps({"num_ids": 20, "vocabulary": {"digest": "ours"}}))
    args = ["baselines", "--dataset", "x", "--data", str(data), "--out", str(tmp_path / "o")]
    assert main(args) == 2 and not calls
    assert (
        f"{data / 'test.pt'} (test) and {data / 'metadata.json'} (metadata) are of different preprocess"
        in (stderr_text())
    )
    save_graph_sets({"dos": toy_graphs(4, num_ids=20, seed=1)}, data / "test.pt")  # an older file
    assert main(args) == 0 and calls
    assert "not checked to be of one preprocess run" in stderr_text() and f"test {data / 'test.pt'}" in (
        stderr_text()
    )


def test_a_checkpoint_path_holding_another_file_is_refused_not_deleted(tmp_path, stderr_text):
    """`--checkpoint <another stage's model.pt>` (or any file that is no checkpoint) was set aside with a warning,
    overwritten after the first epoch and deleted after success: the GAT's model.pt was lost. Refused, and kept."""
    from kdgat.model_store import save_model
    from kdgat.models import GAT

    model, text = tmp_path / "gat" / "model.pt", tmp_path / "notes.pt"
    save_model(GAT(20), "gat", {"num_ids": 20}, model)
    text.write_text("my notes\n")
    args = ["train", "vgae", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--tracking", "none"]
    assert main([*args, "--checkpoint", str(model)]) == 2
    assert f"--checkpoint {model} is a kd_gat gat model file, not a training checkpoint" in stderr_text()
    assert main([*args, "--checkpoint", str(text)]) == 2
    assert f"--checkpoint {text} is a file torch cannot read" in stderr_text()
    assert model.is_file() and text.read_text() == "my notes\n" and not (tmp_path / "o").exists()


def test_a_default_checkpoint_path_holding_another_file_is_refused_naming_the_default_not_the_option(
    tmp_path, stderr_text
):
    """Without --checkpoint, an unreadable <out>/last.pt (or a folder there) was refused as "--checkpoint ...",
    an option the user never gave; the message names the default path and the ways on, and still refuses."""
    out = tmp_path / "o"
    out.mkdir()
    (out / "last.pt").write_text("my notes\n")
    args = ["train", "vgae", "--data", str(tmp_path), "--out", str(out), "--tracking", "none"]
    assert main(args) == 2
    assert (
        stderr_text()
        .rstrip()
        .endswith(
            f"kdgat train vgae: the default checkpoint path {out / 'last.pt'} (<out>/last.pt) is a file torch cannot "
            "read (UnpicklingError), not a training checkpoint: the job would overwrite it after its first epoch and "
            "delete it after success; remove it, pass --no-checkpoint, or give --checkpoint another path"
        )
    )
    assert (out / "last.pt").read_text() == "my notes\n"
    (out / "last.pt").unlink()
    (out / "last.pt").mkdir()
    assert main(args) == 2
    assert (
        stderr_text()
        .rstrip()
        .endswith(
            f"kdgat train vgae: the default checkpoint path {out / 'last.pt'} (<out>/last.pt) is a folder; remove it, "
            "pass --no-checkpoint, or give --checkpoint another path"
        )
    )
    assert "--checkpoint " + str(out) not in stderr_text()


def test_train_refuses_an_out_over_its_inputs_and_a_model_of_another_variant(tmp_path, stderr_text):
    """`train gat --out <chain>/seed_42/teacher/vgae` wrote the GAT over the VGAE it read, and `train vgae --variant
    student_kd --teacher <a student's VGAE>` distilled from a student: both exited 0. Refused before training."""
    from kdgat.model_store import save_model
    from kdgat.models import GAT, VGAE

    chain = tmp_path / "chain" / "seed_42"
    for variant in ("teacher", "student"):
        save_model(VGAE(20), "vgae", {"num_ids": 20}, chain / variant / "vgae" / "model.pt", variant=variant)
    base = ["--data", str(tmp_path), "--chain", str(tmp_path / "chain"), "--tracking", "none"]
    vgae = chain / "teacher" / "vgae"
    assert main(["train", "gat", *base, "--out", str(vgae)]) == 2
    assert f"the job's model file {vgae / 'model.pt'} is also its vgae input, which it would overwrite" in (
        stderr_text()
    )
    student = chain / "student" / "vgae" / "model.pt"
    out = ["--out", str(tmp_path / "o")]
    assert main(["train", "vgae", *base, *out, "--variant", "student_kd", "--teacher", str(student)]) == 2
    assert f"--teacher {student} is a student model; this job (student_kd vgae) needs the teacher's" in (
        stderr_text()
    )
    assert main(["train", "gat", *base, *out, "--vgae", str(student)]) == 2
    assert f"--vgae {student} is a student model; this job (teacher gat) needs the teacher's" in stderr_text()
    student_gat = chain / "student" / "gat" / "model.pt"
    save_model(GAT(20), "gat", {"num_ids": 20}, student_gat, variant="student")
    assert main(["train", "dqn", *base, *out, "--gat", str(student_gat)]) == 2
    assert (
        f"--gat {student_gat} is a student model; this job (teacher dqn) needs the teacher's" in stderr_text()
    )
    assert not (tmp_path / "o").exists() and (vgae / "model.pt").is_file()


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
    # Every graph file records the run's vocabulary, which metadata.json names too (what the commands compare).
    from kdgat.graph_store import graph_vocabulary

    digests = {graph_vocabulary(f"out/{name}.pt") for name in ("train", "val", "test", "fusion")}
    assert digests == {metadata["vocabulary"]["digest"]} and None not in digests

    config["datasets"]["syn"]["path"] = "resources/preprocess/syn"
    Path("config.yaml").write_text(yaml.safe_dump(config))
    assert main(["preprocess", "--dataset", "syn", "--config", "config.yaml", "--out", "again"]) == 2
    assert "datasets.syn: give its logs in exactly one of synthetic.files, path or files" in stderr_text()
    assert not Path("again").exists()


def test_preprocess_names_a_dataset_entry_of_the_wrong_shape_in_its_config_instead_of_a_traceback(
    tmp_path, monkeypatch, stderr_text
):
    # The workflow's schema refuses these; the command read them unchecked: `train: a.csv` (a string, not a list)
    # was read letter by letter ("files.train[1]: / is a folder"), `test: [b.csv]` and `files: [a.csv]` ended
    # in "dictionary update sequence element #0 ..." or a Python traceback, `train:` left empty in another one.
    from kdgat import preprocess

    calls = recorded_calls(monkeypatch, preprocess, "preprocess_dataset")
    monkeypatch.chdir(tmp_path)
    Path("a.csv").write_text("1.0,0316,1,05,R\n")
    Path("b.csv").write_text("1.0,0316,1,05,T\n")
    # Checked against the preprocess schema's datasets part, as the workflow checks it: the key, the file, what
    # was expected.
    where = "(set in config.yaml)"
    cases = [
        ({"files": {"train": "a.csv", "test": {"dos": ["b.csv"]}}},
         f"config key datasets.lab.files.train {where}: 'a.csv' is not of type 'array'"),
        ({"files": {"train": None, "test": {"dos": ["b.csv"]}}},
         f"config key datasets.lab.files.train {where}: None is not of type 'array'"),
        ({"files": {"train": ["a.csv"], "test": ["b.csv"]}},
         f"config key datasets.lab.files.test {where}: ['b.csv'] is not of type 'object'"),
        ({"files": {"train": ["a.csv"], "test": {"dos": "b.csv"}}},
         f"config key datasets.lab.files.test.dos {where}: 'b.csv' is not of type 'array'"),
        ({"files": ["a.csv"]}, f"config key datasets.lab.files {where}: ['a.csv'] is not of type 'object'"),
        ({"path": ["lab"]}, f"config key datasets.lab.path {where}: ['lab'] is not of type 'string'"),
        ("lab", f"config key datasets.lab {where}: 'lab' is not of type 'object'"),
    ]  # fmt: skip
    for entry, message in cases:
        Path("config.yaml").write_text(yaml.safe_dump({"datasets": {"lab": entry}}))
        assert main(["preprocess", "--dataset", "lab", "--config", "config.yaml", "--out", "out"]) == 2, entry
        assert f"kdgat preprocess: {message}" in stderr_text(), entry
    assert not calls and not Path("out").exists()


def test_preprocess_refuses_a_dataset_entry_the_preprocess_schema_refuses_naming_the_key_and_file(
    tmp_path, monkeypatch, stderr_text
):
    # Shapes the hand-written check missed: a misspelt files key was ignored without a word (its logs left out of
    # the run), an unknown entry key too, and a format outside the schema's enum failed only in the reader.
    from kdgat import preprocess

    calls = recorded_calls(monkeypatch, preprocess, "preprocess_dataset")
    monkeypatch.chdir(tmp_path)
    Path("a.csv").write_text("1.0,0316,1,05,R\n")
    Path("b.csv").write_text("1.0,0316,1,05,T\n")
    files = {"train": ["a.csv"], "test": {"dos": ["b.csv"]}}
    cases = [
        ({"files": {**files, "fusoin": ["b.csv"]}},
         "config key datasets.lab.files.fusoin (set in config.yaml): an unknown key; datasets.lab.files takes "
         "['fusion', 'test', 'train']"),
        ({"files": files, "pth": "lab"},
         "config key datasets.lab.pth (set in config.yaml): an unknown key; datasets.lab takes ['files', "
         "'format', 'path', 'synthetic']"),
        ({"files": files, "format": "hcrl"},
         "config key datasets.lab.format (set in config.yaml): 'hcrl' is not one of ['auto', 'hcrl_csv', "
         "'hcrl_txt', 'can_4col', 'candump']"),
    ]  # fmt: skip
    for entry, message in cases:
        Path("config.yaml").write_text(yaml.safe_dump({"datasets": {"lab": entry}}))
        assert main(["preprocess", "--dataset", "lab", "--config", "config.yaml", "--out", "out"]) == 2, entry
        assert f"kdgat preprocess: {message}" in stderr_text(), entry
    assert not calls and not Path("out").exists()


def test_the_preprocess_command_reads_the_preprocess_modules_own_schema():
    # One schema for the workflow and the command: the command's file is the module's (a link in a checkout).
    from kdgat.cli.steps import PREPROCESS_SCHEMA

    module_schema = Path(__file__).parents[2] / "workflow" / "modules" / "preprocess" / "schemas"
    assert PREPROCESS_SCHEMA.resolve() == (module_schema / "config.schema.yaml").resolve()


def test_preprocess_refuses_logs_it_would_ignore_beside_path_or_a_config_entry_and_train_without_test(
    tmp_path, monkeypatch, stderr_text
):
    # The logs come from --train/--test, or from --path, or from datasets.<name>: a --test beside --path (or a
    # config entry) would be dropped, a --path beside --train ignored, so each is refused naming both flags.
    from kdgat import preprocess

    calls = recorded_calls(monkeypatch, preprocess, "preprocess_dataset")
    monkeypatch.chdir(tmp_path)
    for folder in ("train_01_attack_free", "test_01_dos"):
        Path("lab", folder).mkdir(parents=True)
        Path("lab", folder, "a.csv").write_text("1.0,0316,1,05,R\n")
    Path("extra.csv").write_text("1.0,0316,1,05,R\n")
    Path("config.yaml").write_text(yaml.safe_dump({"datasets": {"lab": {"path": "lab"}}}))
    base = ["preprocess", "--dataset", "lab", "--out", "out"]
    assert main([*base, "--path", "lab", "--test", "replay=extra.csv"]) == 2
    assert "--test is given with --path" in stderr_text()
    assert main([*base, "--config", "config.yaml", "--test", "replay=extra.csv"]) == 2
    assert "--test is given with datasets.lab of --config" in stderr_text()
    assert main([*base, "--path", "lab", "--train", "extra.csv", "--test", "replay=extra.csv"]) == 2
    assert "--train and --path both name the logs" in stderr_text()
    # --train alone would write a test.pt of no scenario, which the workflow refuses for a dataset.
    assert main([*base, "--train", "extra.csv"]) == 2
    assert "--train is given without --test: give at least one test scenario as --test SCENARIO=FILE" in (
        stderr_text()
    )
    assert not calls and not Path("out").exists()


def test_a_folder_given_to_train_or_test_points_to_the_path_flag_not_a_config_key(
    tmp_path, monkeypatch, stderr_text
):
    # On the command line a dataset folder goes in --path; datasets.<name>.path only applies with --config.
    monkeypatch.chdir(tmp_path)
    for folder in ("train_01", "test_01_dos"):
        Path("lab", folder).mkdir(parents=True)
        Path("lab", folder, "a.csv").write_text("1.0,0316,1,05,R\n")
    base = ["preprocess", "--dataset", "lab", "--out", "out"]
    assert main([*base, "--train", "lab/train_01", "--test", "dos=lab/test_01_dos/a.csv"]) == 2
    assert (
        "kdgat preprocess: --train lab/train_01 is a folder, not a CAN log file: give --train/--test the log files, "
        "or the dataset folder (train_*/, test_NN_<scenario>/) as --path instead of --train/--test"
    ) in stderr_text()
    assert main([*base, "--train", "lab/train_01/a.csv", "--test", "dos=lab/test_01_dos"]) == 2
    assert "kdgat preprocess: --test dos=lab/test_01_dos is a folder, not a CAN log file: " in stderr_text()
    assert "datasets.<name>.path" not in stderr_text()
    assert not Path("out").exists()


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
    assert "Traceback" not in stderr_text()  # the message is the whole story (kdgat.cli._explained)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # what SLURM sets for a job holding a GPU
    assert main([*args, "--device", "auto"]) == 1
    assert "this job holds a GPU (CUDA_VISIBLE_DEVICES=0)" in stderr_text()
    assert not (tmp_path / "o").exists()  # stopped before any data was read or written


def test_ctrl_c_is_a_message_saying_how_to_resume_not_a_traceback(tmp_path, monkeypatch, stderr_text):
    def interrupted(**_):
        raise KeyboardInterrupt  # where Ctrl-C lands: inside the library's epoch loop

    import kdgat.training.vgae

    monkeypatch.setattr(kdgat.training.vgae, "run", interrupted)
    args = ["train", "vgae", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--device", "cpu"]
    assert main(args) == 130  # the shell's code for SIGINT
    assert "kdgat train vgae: interrupted; run the same command again to resume" in stderr_text()
    assert main([*args, "--no-checkpoint"]) == 130
    assert stderr_text().rstrip().endswith("kdgat train vgae: interrupted")  # no checkpoint, no resume
    assert "Traceback" not in stderr_text()


def test_sigterm_is_a_message_saying_how_to_resume_and_exit_status_143(tmp_path, monkeypatch, stderr_text):
    """What SLURM sends at the walltime: the real signal, delivered inside the training run, ends the command with
    one line and the shell's status for SIGTERM, and the default handler is back afterwards."""

    def terminated(**_):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises at the next bytecode; never reached
        raise AssertionError("SIGTERM did not stop the run")

    import kdgat.training.vgae

    monkeypatch.setattr(kdgat.training.vgae, "run", terminated)
    args = ["train", "vgae", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--device", "cpu"]
    assert main(args) == 143
    assert "kdgat train vgae: stopped by SIGTERM; run the same command again to resume" in stderr_text()
    assert "Traceback" not in stderr_text()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_sighup_is_a_message_saying_how_to_resume_and_exit_status_129(tmp_path, monkeypatch, stderr_text):
    """What a closing terminal or ssh session sends: handled as SIGTERM is, one line naming SIGHUP and the shell's
    status for it; the handler found before is back afterwards."""

    def terminated(**_):
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(5)  # the handler raises at the next bytecode; never reached
        raise AssertionError("SIGHUP did not stop the run")

    def ignored(signum, frame):  # were SIGHUP left alone, its default action would end pytest itself
        pass

    import kdgat.training.vgae

    monkeypatch.setattr(kdgat.training.vgae, "run", terminated)
    previous = signal.signal(signal.SIGHUP, ignored)
    try:
        args = ["train", "vgae", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--device", "cpu"]
        assert main(args) == 128 + signal.SIGHUP
        assert "kdgat train vgae: stopped by SIGHUP; run the same command again to resume" in stderr_text()
        assert "Traceback" not in stderr_text()
        assert signal.getsignal(signal.SIGHUP) is ignored
    finally:
        signal.signal(signal.SIGHUP, previous)


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


def test_a_bar_is_drawn_only_on_a_terminal_unless_asked_for():
    """kdgat.cli.progress: without a terminal (a pipe, a batch job's output file) there is no bar, whose carriage
    returns would fill the job's log; --progress bar or lines decides whatever the stream is."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert wants_bar("auto", Terminal()) and not wants_bar("auto", io.StringIO())
    assert wants_bar("bar", io.StringIO()) and not wants_bar("lines", Terminal())
    assert not wants_bar("auto", object())  # a stream that cannot tell is no terminal


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


@pytest.mark.parametrize("saved", [{"epoch": 3}, {"fingerprint": "0123456789abcdef"}])
def test_a_dict_without_both_the_fingerprint_and_epoch_of_a_checkpoint_is_refused_as_checkpoint(
    saved, tmp_path, stderr_text
):
    """kdgat.training.loop.not_a_checkpoint: the loop's checkpoint is a dict with ``fingerprint`` and ``epoch``; a
    dict holding one of them only is another file, refused and kept; one holding both is resumed from."""
    import torch

    from kdgat.training.loop import not_a_checkpoint

    other = tmp_path / "state.pt"
    torch.save(saved, other)
    assert not_a_checkpoint(other) == "a file holding dict"
    args = ["train", "vgae", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--tracking", "none"]
    assert main([*args, "--checkpoint", str(other)]) == 2
    assert f"--checkpoint {other} is a file holding dict, not a training checkpoint" in stderr_text()
    assert torch.load(other, weights_only=False) == saved and not (tmp_path / "o").exists()
    torch.save({"fingerprint": "0123456789abcdef", "epoch": 3}, other)
    assert not_a_checkpoint(other) is None


def recorded_calls(monkeypatch, module, name: str) -> list[dict]:
    """The keyword arguments of each call of ``module.name``, which records them instead of doing the work (its
    signature kept: the commands read it)."""
    import functools

    calls = []

    @functools.wraps(getattr(module, name))
    def recording(**kwargs):
        calls.append(kwargs)
        return {}

    monkeypatch.setattr(module, name, recording)
    return calls


def test_a_workflow_config_whose_section_is_no_mapping_is_refused_naming_the_key(tmp_path, stderr_text):
    config = tmp_path / "config.yaml"
    config.write_text("datasets: {}\nevaluation: [0.1, 0.2]\n")
    args = ["baselines", "--config", str(config), "--dataset", "x", "--data", str(tmp_path), "--out", "o"]
    assert main(args) == 2
    assert f"{config}: config key 'evaluation' must be a mapping" in stderr_text()
    assert "Traceback" not in stderr_text()


@pytest.mark.parametrize(
    ("command", "misspelt", "section"),
    [
        (["train", "vgae", "--data", "d", "--out", "o", "--print-settings"], "kdgat", "kd_gat"),
        (
            ["train", "gat", "--data", "d", "--out", "o", "--vgae", "v", "--print-settings"],
            "kd_gatt",
            "kd_gat",
        ),
        (["baselines", "--dataset", "x", "--data", "d", "--out", "o"], "evaluations", "evaluation"),
    ],
)
def test_a_workflow_config_whose_section_is_misspelt_is_refused_not_read_as_defaults(
    tmp_path, capsys, stderr_text, command, misspelt, section
):
    """A workflow config.yaml with `kdgat:` for `kd_gat:` (the workflow refuses the top-level key) trained with every
    default, the full-size teacher preset on device auto, as if the file had no kd_gat section."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"datasets": {}, misspelt: {"device": "cpu"}}))
    assert main([*command, "--config", str(config)]) == 2
    assert (
        f"{config}: no {section!r} section, but a top-level key {misspelt!r}: a misspelt {section!r}?"
        in stderr_text()
    )
    assert "Traceback" not in stderr_text()
    # Top-level keys of a downstream workflow's own, not like the section's name, are read past as before.
    config.write_text(yaml.safe_dump({"datasets": {}, "my_analysis": {"plots": True}}))
    assert (
        main(["train", "vgae", "--data", "d", "--out", "o", "--print-settings", "--config", str(config)]) == 0
    )


def test_an_empty_settings_file_is_no_settings_and_a_file_of_no_mapping_or_no_yaml_is_named(
    tmp_path, capsys, restore_logging
):
    args = ["train", "vgae", "--data", "d", "--out", "o", "--print-settings"]
    assert main(args) == 0
    without = json.loads(capsys.readouterr().out)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing set yet\n")
    assert main([*args, "--config", str(empty)]) == 0
    assert json.loads(capsys.readouterr().out) == without
    listed, broken = tmp_path / "list.yaml", tmp_path / "broken.yaml"
    listed.write_text("- seeds\n- device\n")
    broken.write_text("seeds: [1, 2\n")
    assert main([*args, "--config", str(listed)]) == 2
    assert f"settings file {listed}: expected a mapping, got list" in capsys.readouterr().err
    assert main([*args, "--config", str(broken)]) == 2
    err = capsys.readouterr().err
    assert f"settings file {broken} is not valid YAML" in err and "Traceback" not in err


def test_an_empty_seed_list_trains_the_default_seed(capsys):
    """kdgat.cli.config.first_seed: an empty kd_gat.seeds names no seed (an IndexError otherwise)."""
    from kdgat.chain import DEFAULT_SEEDS

    args = ["train", "vgae", "--data", "d", "--out", "o", "--set", "seeds=[]", "--print-settings"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["settings"]["seed"] == DEFAULT_SEEDS[0]


def test_the_log_takes_info_records_and_its_file_may_be_in_a_folder_not_made_yet(tmp_path, restore_logging):
    """kdgat.cli.progress.configure_logging: kdgat's records, INFO and up, to the stream and appended to --log,
    whose folder (a rule's logs/ folder) is made."""
    import logging

    from kdgat.cli.progress import configure_logging

    stream, log_file = io.StringIO(), tmp_path / "logs" / "train" / "job.log"
    configure_logging(str(log_file), bar=False, stream=stream)
    logging.getLogger("kdgat.training").info("epoch 1 done")
    logging.getLogger("kdgat.training").debug("a detail")
    assert "epoch 1 done" in stream.getvalue() and "a detail" not in stream.getvalue()
    assert "epoch 1 done" in log_file.read_text() and "a detail" not in log_file.read_text()


def test_an_interrupted_evaluation_says_so_without_promising_a_checkpoint(tmp_path, monkeypatch, stderr_text):
    """Only a training run keeps a checkpoint to resume from; Ctrl-C in `kdgat evaluate` says it was interrupted."""
    from kdgat.evaluation import run as evaluation_run

    def interrupted(**_):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluation_run, "evaluate_files", interrupted)
    args = ["evaluate", "--dataset", "x", "--variant", "teacher", "--chain", "c", "--data", "d", "--out", "o",
            "--tracking", "none"]  # fmt: skip
    assert main(args) == 130
    assert stderr_text().rstrip().endswith("kdgat evaluate: interrupted")
    assert "resume" not in stderr_text() and "Traceback" not in stderr_text()


def test_a_library_os_error_is_one_line_naming_it_and_an_unexpected_error_keeps_its_traceback(
    tmp_path, monkeypatch, stderr_text
):
    """kdgat.cli._explained: an OSError or ValueError names the file (as the workflow's rule log shows it), without a
    traceback; any other exception is a bug, logged with its traceback."""
    from kdgat.evaluation import baselines

    def raising(error):
        def call(**_):
            raise error

        return call

    args = ["baselines", "--dataset", "x", "--data", "d", "--out", "o"]
    denied = PermissionError(13, "Permission denied", "o/baselines.json")
    monkeypatch.setattr(baselines, "baselines_files", raising(denied))
    assert main(args) == 1
    assert (
        "kdgat baselines failed: PermissionError: [Errno 13] Permission denied: 'o/baselines.json'"
        in stderr_text()
    )
    assert "Traceback" not in stderr_text()
    monkeypatch.setattr(baselines, "baselines_files", raising(RuntimeError("a bug")))
    assert main(args) == 1
    assert "kdgat baselines failed" in stderr_text() and "Traceback" in stderr_text()
    assert "RuntimeError: a bug" in stderr_text()


def test_progress_is_auto_by_default_for_every_training_stage():
    """--progress: "auto (default): a bar on an interactive terminal, lines otherwise"."""
    for stage in ("vgae", "gat", "dqn"):
        assert parser().parse_args(["train", stage, "--data", "d"]).progress == "auto", stage


def test_summarize_draws_training_curves_only_when_given_histories(tmp_path, monkeypatch):
    """ "with --history, the training curves": without one, summarize_files is asked for no curves (it refuses
    curves without a history.csv)."""
    from kdgat.evaluation import run as evaluation_run

    calls = recorded_calls(monkeypatch, evaluation_run, "summarize_files")
    out = tmp_path / "o"
    assert main(["summarize", "--metrics", "m.json", "--out", str(out)]) == 0
    assert calls[-1]["curves"] is None and calls[-1]["histories"] == []
    history = tmp_path / "history.csv"
    history.write_text("epoch,train_loss\n1,0.5\n")
    assert (
        main(["summarize", "--metrics", "m.json", "--out", str(out), "--history", f"student/dqn={history}"])
        == 0
    )
    assert calls[-1]["curves"] == str(out / "training_curves.svg")
    assert calls[-1]["histories"] == [str(history)] and calls[-1]["history_keys"] == ["student/dqn"]


def test_preprocess_takes_the_config_then_set_then_each_flag(tmp_path, monkeypatch):
    from kdgat import preprocess

    calls = recorded_calls(monkeypatch, preprocess, "preprocess_dataset")
    config = tmp_path / "preprocess.yaml"
    config.write_text(yaml.safe_dump({"window_size": 50, "stride": 25, "seed": 1, "val_fraction": 0.3}))
    base = ["preprocess", "--config", str(config), *TINY_LOGS, "--out", "o"]
    assert main([*base, "--set", "stride=10", "--set", "seed=2"]) == 0
    assert {key: calls[-1][key] for key in ("window_size", "stride", "seed", "val_fraction")} == {
        "window_size": 50, "stride": 10, "seed": 2, "val_fraction": 0.3,
    }  # fmt: skip
    assert calls[-1]["fmt"] == "auto"
    flags = ["--window-size", "20", "--stride", "5", "--val-fraction", "0.1", "--time-blocks", "4", "--seed", "3",
             "--bad-rows", "skip", "--format", "hcrl_csv"]  # fmt: skip
    assert main([*base, "--set", "seed=2", *flags]) == 0
    assert {key: calls[-1][key] for key in ("window_size", "stride", "val_fraction", "time_blocks", "seed")} == {
        "window_size": 20, "stride": 5, "val_fraction": 0.1, "time_blocks": 4, "seed": 3,
    }  # fmt: skip
    assert calls[-1]["bad_rows"] == "skip" and calls[-1]["fmt"] == "hcrl_csv"


def test_a_section_holding_every_key_of_its_schema_is_taken_by_the_commands(tmp_path, monkeypatch):
    """The workflow's config.yaml may set every key of the preprocess and evaluation sections (the rules'
    resources among them): each is a library setting or a workflow key the command leaves to the workflow."""
    from kdgat import preprocess
    from kdgat.evaluation import baselines
    from kdgat.evaluation import run as evaluation_run

    calls = {
        "preprocess": recorded_calls(monkeypatch, preprocess, "preprocess_dataset"),
        "evaluate": recorded_calls(monkeypatch, evaluation_run, "evaluate_files"),
        "baselines": recorded_calls(monkeypatch, baselines, "baselines_files"),
    }
    monkeypatch.chdir(tmp_path)
    sections = {
        module: {
            key: spec["default"] for key, spec in schema(module)["properties"][module]["properties"].items()
        }
        for module in ("preprocess", "evaluation")
    }
    Path("config.yaml").write_text(yaml.safe_dump({"datasets": {}, **sections}))
    common = ["--config", "config.yaml", "--dataset", "x", "--out", "o"]
    assert main(["preprocess", *common, "--train", "a.csv", "--test", "dos=b.csv"]) == 0
    assert main(["evaluate", *common, "--variant", "teacher", "--chain", "c", "--data", "d"]) == 0
    assert main(["baselines", *common, "--data", "d"]) == 0
    assert all(len(made) == 1 for made in calls.values()), calls
    assert calls["preprocess"][0]["window_size"] == sections["preprocess"]["window_size"]
    assert calls["evaluate"][0]["batch_size"] == sections["evaluation"]["batch_size"]
    assert calls["evaluate"][0]["threads"] == sections["evaluation"]["threads"]


def test_a_held_out_split_set_to_null_takes_no_fusion_captures(tmp_path, monkeypatch, stderr_text):
    """preprocess.held_out.fusion: "null (default) writes no fusion split; 0 takes no blocks, so fusion.pt holds only
    the dataset's whole fusion captures": a fusion_NN folder beside a null share is refused, naming it."""
    from kdgat import preprocess

    calls = recorded_calls(monkeypatch, preprocess, "preprocess_dataset")
    monkeypatch.chdir(tmp_path)
    for folder in ("train_01_attack_free", "test_01_dos", "fusion_01_dos"):
        Path("lab", folder).mkdir(parents=True)
        Path("lab", folder, "a.csv").write_text("1.0,0316,1,05,R\n")
    args = ["preprocess", "--dataset", "lab", "--path", "lab", "--out", "o"]
    assert main([*args, "--set", "held_out.fusion=null"]) == 2 and not calls
    assert (
        "folders hold whole captures of ['fusion'], but preprocess.held_out does not write" in stderr_text()
    )
    assert main([*args, "--set", "held_out.fusion=0"]) == 0
    assert calls[-1]["held_out_files"] == {"fusion": ["lab/fusion_01_dos/a.csv"]}


def test_a_synthetic_dataset_not_generated_yet_is_named_before_preprocessing(
    tmp_path, monkeypatch, stderr_text
):
    from kdgat import preprocess

    calls = recorded_calls(monkeypatch, preprocess, "preprocess_dataset")
    monkeypatch.chdir(tmp_path)
    files = [
        {"split": s, "name": "none", "attack": "none", "duration_s": 1} for s in ("train_01_a", "test_01_dos")
    ]
    Path("config.yaml").write_text(yaml.safe_dump({"datasets": {"syn": {"synthetic": {"files": files}}}}))
    assert (
        main(["preprocess", "--dataset", "syn", "--config", "config.yaml", "--out", "o"]) == 2 and not calls
    )
    assert "datasets.syn is synthetic and resources/preprocess/syn/" in stderr_text()
    assert (
        "was not generated yet (run the workflow's generate_can rules, or give --train/--test)"
        in stderr_text()
    )


def test_evaluate_checks_the_gat_when_the_vgae_records_no_training_data(tmp_path, monkeypatch, stderr_text):
    """check_trained_on_data: a model written before the digest was recorded has nothing to compare, and the other
    model is still compared (a VGAE without a digest let a GAT of another preprocess run through)."""
    from kdgat.files import file_sha256
    from kdgat.graph_store import save_graphs
    from kdgat.model_store import save_model
    from kdgat.models import GAT, VGAE, QNetwork
    from kdgat.testing import toy_graphs

    calls = recorded_evaluations(monkeypatch)
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    save_graphs(toy_graphs(4, num_ids=20, seed=0), ours / "train.pt")
    save_graphs(toy_graphs(4, num_ids=20, seed=1), theirs / "train.pt")
    models = tmp_path / "models"
    save_model(VGAE(20), "vgae", {"num_ids": 20}, models / "vgae.pt")  # no trained_on: an older file
    save_model(
        GAT(20), "gat", {"num_ids": 20}, models / "gat.pt", trained_on=file_sha256(theirs / "train.pt")
    )
    save_model(QNetwork(), "dqn", {}, models / "dqn.pt")
    args = ["evaluate", "--dataset", "x", "--variant", "teacher", "--out", str(tmp_path / "o"), "--tracking",
            "none", *(f"--{name}={models / name}.pt" for name in ("vgae", "gat", "dqn"))]  # fmt: skip
    assert main([*args, "--data", str(ours)]) == 2 and not calls
    assert f"the gat model {models / 'gat.pt'} was trained on another train.pt than {ours / 'train.pt'}" in (
        stderr_text()
    )
    assert main([*args, "--data", str(theirs)]) == 0 and calls[-1]["gat"] == str(models / "gat.pt")


@pytest.mark.parametrize("stage", ["vgae", "gat", "dqn"])
def test_the_default_path_each_train_input_option_states_is_the_path_it_reads(stage, capsys):
    """`kdgat train --help` gives each input's default path; --print-settings shows the path the job reads. The
    model options once said `<chain>/seed_<seed>/<variant>/vgae` (a folder) where model.pt in it is read."""
    chain, data, seed, variant = "c", "d", 5, "student_kd"
    argv = ["train", stage, "--data", data, "--chain", chain, "--variant", variant, "--seed", str(seed)]
    assert main([*argv, "--print-settings"]) == 0
    inputs = json.loads(capsys.readouterr().out)["inputs"]
    stated = {}
    for action in COMMANDS[("train", stage)]._actions:
        match = re.search(r"\(default (<(?:chain|data)>/[^ );]+)", " ".join((action.help or "").split()))
        if match and action.dest in inputs:
            stated[action.dest] = match.group(1)
    assert {"metadata", "vgae" if stage != "vgae" else "train"} <= set(stated), stated
    settings = {"<chain>": chain, "<data>": data, "<seed>": str(seed), "<variant>": variant}
    for name, default in stated.items():
        for placeholder, value in settings.items():
            default = default.replace(placeholder, value)
        if "<" not in default:  # <kd_gat.dqn.fit_split> and the like depend on settings shown elsewhere
            assert inputs[name] == default, f"--{name.replace('_', '-')}: help says {stated[name]}"

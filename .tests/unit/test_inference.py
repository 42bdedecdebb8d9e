"""The file-level chain (what the wrappers call): outputs on disk, load_model round trip, score_graphs columns."""

import json
import shutil

import pandas as pd
import pytest
import torch
from testkit import count_header_reads

from kdgat.files import file_sha256
from kdgat.graph_store import save_graphs
from kdgat.inference import fusion_inputs as dqn_fusion_inputs
from kdgat.inference import score_graphs
from kdgat.model_store import load_model, trained_on
from kdgat.models import GAT, LEARNT, NUM_ACTIONS, VGAE, QNetwork
from kdgat.models.vgae import ERROR_TERMS
from kdgat.testing import toy_graphs
from kdgat.training import dqn, gat, vgae
from kdgat.training.settings import StageSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRAINING = {"epochs": 3, "batch_size": 32, "lr": 0.005, "weight_decay": 1e-4, "patience": 5, "grad_clip": 1.0}
RL = {
    "buffer_size": 1000,
    "batch_size": 32,
    "steps_per_episode": 64,
    "updates_per_episode": 4,
    "gamma": 0.2,
    "target_update": 5,
    "eps_start": 1.0,
    "eps_end": 0.1,
}
COLUMNS = ["label", "vgae_error", "vgae_score", "gat_prob", "fusion_alpha", "fusion_score", "fusion_pred"]


KD_GAT = {
    "teacher_preset": "demo_teacher",
    "student_preset": "demo_student",
    "seed": 1,
    "device": "cpu",
    "training": {stage: TRAINING for stage in ("vgae", "gat", "dqn")},
    "dqn": RL,
}


def stage_settings(variant, stage):
    return StageSettings.from_config(KD_GAT, stage, variant).as_dict()


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("kd_gat")
    data = root / "graphs"
    save_graphs(toy_graphs(150, num_ids=20, seed=1), data / "train.pt")
    save_graphs(toy_graphs(50, num_ids=20, seed=2), data / "val.pt")
    (data / "metadata.json").write_text(json.dumps({"num_ids": 20}))

    def outputs(variant, stage):
        folder = root / variant / stage
        return {
            "model": folder / "model.pt",
            "metrics": folder / "metrics.json",
            "history": folder / "history.csv",
            "checkpoint": root / "checkpoints" / variant / stage / "last.pt",
        }

    def written(files):  # the outputs a stage writes; the checkpoint is passed on its own
        return {name: path for name, path in files.items() if name != "checkpoint"}

    for variant in ("teacher", "student_kd"):
        kd = variant == "student_kd"
        out = {stage: outputs(variant, stage) for stage in ("vgae", "gat", "dqn")}
        teacher = {stage: outputs("teacher", stage)["model"] for stage in ("vgae", "gat", "dqn")}
        files = {
            name: data / f"{name}.{ext}"
            for name, ext in (("train", "pt"), ("val", "pt"), ("metadata", "json"))
        }

        vgae.run(
            **files,
            settings=stage_settings(variant, "vgae"),
            outputs=written(out["vgae"]),
            checkpoint=out["vgae"]["checkpoint"],
            teacher=teacher["vgae"] if kd else None,
            threads=1,
        )
        gat.run(
            **files,
            settings=stage_settings(variant, "gat"),
            outputs=written(out["gat"]),
            checkpoint=out["gat"]["checkpoint"],
            vgae=out["vgae"]["model"],
            teacher=teacher["gat"] if kd else None,
        )
        dqn.run(
            fit=files["val"],
            metadata=files["metadata"],
            settings=stage_settings(variant, "dqn"),
            outputs=written(out["dqn"]),
            checkpoint=out["dqn"]["checkpoint"],
            vgae=out["vgae"]["model"],
            gat=out["gat"]["model"],
            **({f"teacher_{stage}": path for stage, path in teacher.items()} if kd else {}),
        )
    return root, outputs


@pytest.mark.parametrize("variant", ["teacher", "student_kd"])
@pytest.mark.parametrize("stage", ["vgae", "gat", "dqn"])
def test_each_stage_writes_model_metrics_history_and_drops_its_checkpoint(chain, variant, stage):
    root, outputs = chain
    files = outputs(variant, stage)
    metrics = json.loads(files["metrics"].read_text())
    history = pd.read_csv(files["history"])
    assert metrics["stage"] == stage and metrics["variant"] == variant
    assert metrics["knowledge_distillation"] is (variant == "student_kd")
    assert len(history) == metrics["epochs_run"] >= 1
    assert {"epoch", "val_loss", "graphs_per_s"} <= set(history.columns)
    assert not files["checkpoint"].exists()
    model = load_model(files["model"])
    assert not model.training
    assert metrics["num_parameters"] == sum(p.numel() for p in model.parameters())


def test_student_kd_history_records_the_distillation_term(chain):
    _, outputs = chain
    for stage in ("vgae", "gat", "dqn"):
        history = pd.read_csv(outputs("student_kd", stage)["history"])
        assert "train_kd" in history.columns and history["train_kd"].notna().all()
    # The DQN's distillation keeps the rows where the teacher's α decides alike for the student (a share in [0, 1]).
    kept = pd.read_csv(outputs("student_kd", "dqn")["history"])["train_kd_weight"]
    assert kept.between(0, 1).all()


def test_load_model_rebuilds_the_saved_classes(chain):
    _, outputs = chain
    kinds = {"vgae": VGAE, "gat": GAT, "dqn": QNetwork}
    for stage, cls in kinds.items():
        assert isinstance(load_model(outputs("teacher", stage)["model"]), cls)
    metrics = json.loads(outputs("teacher", "vgae")["metrics"].read_text())
    vgae = load_model(outputs("teacher", "vgae")["model"])
    assert float(vgae.anomaly_threshold) == pytest.approx(metrics["anomaly_threshold"])
    # docs/models.md: each error term's normal mean and spread are stored in model.pt (not the buffers' 0 and 1)
    for i, term in enumerate(ERROR_TERMS):
        assert float(vgae.error_mean[i]) == pytest.approx(metrics["error_mean"][term]) != 0, term
        assert float(vgae.error_std[i]) == pytest.approx(metrics["error_std"][term]) != 1, term


def test_load_model_rejects_other_files(tmp_path):
    torch.save({"weights": 1}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a kd_gat model file"):
        load_model(tmp_path / "x.pt")
    torch.save({"format": "kdgat-model/1", "kind": "vgae"}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match=r"another format version .*'kdgat-model/1'.*retrain it"):
        load_model(tmp_path / "old.pt")


def drop_a_weight(payload):
    payload["state_dict"].pop(next(iter(payload["state_dict"])))


def add_an_unknown_argument(payload):
    payload["config"]["width"] = 3


def drop_the_kind(payload):
    del payload["kind"]


@pytest.mark.parametrize("damage", [drop_a_weight, add_an_unknown_argument, drop_the_kind])
def test_a_model_file_that_does_not_fit_its_class_is_named(chain, tmp_path, damage):
    """A model.pt of the right format tag whose arguments or weights do not fit the model (a layout changed without
    a format bump, a damaged copy) fails naming the file, not with torch's or Python's message alone."""
    _, outputs = chain
    payload = torch.load(outputs("teacher", "gat")["model"], weights_only=True)
    damage(payload)
    torch.save(payload, tmp_path / "model.pt")
    fits_not = (
        r"a kd_gat model file of format .* whose gat arguments or weights do not fit this version's GAT"
    )
    with pytest.raises(ValueError, match=rf"model\.pt: ({fits_not}|unknown model kind None)"):
        load_model(tmp_path / "model.pt")


def test_score_graphs_contract(chain):
    _, outputs = chain
    models = [load_model(outputs("teacher", stage)["model"]) for stage in ("vgae", "gat", "dqn")]
    graphs = toy_graphs(70, num_ids=20, seed=9)
    scores = score_graphs(*models, graphs, batch_size=16)
    assert list(scores.columns) == COLUMNS and len(scores) == 70
    assert scores["label"].tolist() == [int(g.y) for g in graphs]
    for column in ("vgae_score", "gat_prob", "fusion_alpha", "fusion_score"):
        assert scores[column].between(0, 1).all()
    alpha = scores["fusion_alpha"]
    expected = (1 - alpha) * scores["vgae_score"] + alpha * scores["gat_prob"]
    assert (scores["fusion_score"] - expected).abs().max() < 1e-6
    assert (scores["fusion_pred"] == (scores["fusion_score"] > 0.5).astype(int)).all()
    assert ((alpha * 20) - (alpha * 20).round()).abs().max() < 1e-5  # one of the 21 actions
    # Batch size does not change the scores (eval mode, no batch-norm batch statistics).
    pd.testing.assert_frame_equal(scores, score_graphs(*models, graphs, batch_size=64), atol=1e-5)


def test_score_graphs_names_a_can_id_index_outside_the_models_vocabulary(chain):
    """Graphs of another preprocess run with more CAN IDs (docs/evaluation.md points to score_graphs for scoring
    graphs): torch's bare "IndexError: index out of range in self" named neither the index nor the vocabulary."""
    _, outputs = chain
    models = [load_model(outputs("teacher", stage)["model"]) for stage in ("vgae", "gat", "dqn")]
    graphs = toy_graphs(30, num_ids=40, seed=4)  # indices up to 39; the models know 20
    largest = max(int(graph.x[:, 0].max()) for graph in graphs)
    models[0].train()  # handed back as it was handed over: nothing is scored
    with pytest.raises(ValueError) as error:
        score_graphs(*models, graphs, batch_size=16)
    assert [model.training for model in models] == [True, False, False] and largest >= 20
    assert str(error.value) == (
        f"a graph holds CAN-ID index {largest}, outside the 20 CAN-ID indices of the VGAE (20) and GAT (20): the "
        "graphs are of another vocabulary than the models' (another dataset or preprocess run); score graphs of "
        "the preprocess run the models were trained on"
    )


def test_score_graphs_scores_in_eval_mode_and_leaves_each_models_mode_as_it_was(chain):
    """Models handed over in training mode (dropout, the VGAE's sampled z) score as in eval mode, deterministically,
    and are handed back in training mode (training's callers go on training them)."""
    _, outputs = chain
    models = [load_model(outputs("teacher", stage)["model"]) for stage in ("vgae", "gat", "dqn")]
    # The Q-network's own α (so its dropout counts), even where the stage fell back to a constant one.
    models[2].fallback_action.fill_(LEARNT)
    graphs = toy_graphs(30, num_ids=20, seed=5)
    in_eval = score_graphs(*models, graphs, batch_size=16)
    for model in models:
        model.train()
    torch.manual_seed(0)
    in_training = score_graphs(*models, graphs, batch_size=16)
    assert [model.training for model in models] == [True, True, True]
    pd.testing.assert_frame_equal(in_training, in_eval)
    with pytest.raises(ValueError, match="no graphs to score"):
        score_graphs(*models, [], batch_size=16)


def test_scoring_hands_the_callers_models_back_unmoved_and_in_each_submodules_mode_even_when_it_fails(
    chain, monkeypatch
):
    """score_graphs and fusion_inputs moved the caller's models to the scoring device in place (``.to(device)``: a
    model on the CPU scored on CUDA stayed on the GPU), set every submodule to the model's own mode afterwards (a
    head frozen in eval mode came back training), and left them in eval mode when scoring failed part-way."""
    from kdgat.models import VGAE

    _, outputs = chain
    models = [load_model(outputs("teacher", stage)["model"]) for stage in ("vgae", "gat", "dqn")]
    for model in models:
        model.train()
    models[1].head.eval()  # a GAT whose classifier head the caller keeps frozen
    modes = [[module.training for module in model.modules()] for model in models]
    moved = []
    to = torch.nn.Module.to
    monkeypatch.setattr(
        torch.nn.Module, "to", lambda module, *a, **k: moved.append(module) or to(module, *a, **k)
    )
    graphs = toy_graphs(30, num_ids=20, seed=5)
    score_graphs(*models, graphs, batch_size=16)
    assert [module for module in moved if any(module is model for model in models)] == []
    assert [[module.training for module in model.modules()] for model in models] == modes

    def fails(*args, **kwargs):
        raise RuntimeError("out of memory")  # as a GPU says it, part-way through the graphs

    monkeypatch.setattr(VGAE, "graph_errors", fails)
    with pytest.raises(RuntimeError, match="out of memory"):
        score_graphs(*models, graphs, batch_size=16)
    assert [[module.training for module in model.modules()] for model in models] == modes
    if torch.cuda.is_available():  # a GPU machine: scored there, the caller's CPU models stay on the CPU
        monkeypatch.undo()
        score_graphs(*models, graphs, batch_size=16, device="cuda")
        assert {parameter.device.type for model in models for parameter in model.parameters()} == {"cpu"}


def test_dqn_learns_from_the_fit_file_and_stops_on_the_stop_file(chain, tmp_path):
    root, outputs = chain
    data = root / "graphs"
    save_graphs(toy_graphs(30, num_ids=20, seed=4), tmp_path / "stop.pt")
    out = {
        name: tmp_path / f"dqn.{ext}"
        for name, ext in (("model", "pt"), ("metrics", "json"), ("history", "csv"))
    }
    metrics = dqn.run(
        fit=data / "val.pt",
        stop=tmp_path / "stop.pt",
        metadata=data / "metadata.json",
        settings=stage_settings("teacher", "dqn"),
        outputs=out,
        vgae=outputs("teacher", "vgae")["model"],
        gat=outputs("teacher", "gat")["model"],
    )
    assert (metrics["fit_graphs"], metrics["stop_graphs"]) == (50, 30)
    # Without a stop file, 5 of 20 contiguous blocks of the fit graphs are held out.
    default = json.loads(outputs("teacher", "dqn")["metrics"].read_text())
    assert (default["fit_graphs"], default["stop_graphs"]) == (40, 10)
    assert sum(default["alpha_histogram"]) == default["stop_graphs"]
    # One bin per DQN action; docs/models.md says "21 bins", so both the literal and the constant are checked.
    assert len(default["alpha_histogram"]) == 21 == NUM_ACTIONS
    assert {"val_agrees_with_gat", "val_f1_alpha_0", "val_f1_alpha_0.5", "val_f1_alpha_1"} <= set(default)


def test_without_a_stop_file_the_dqn_stops_on_early_stop_share_of_the_fit_graphs(chain, tmp_path):
    root, outputs = chain
    data = root / "graphs"
    held_half = KD_GAT | {"dqn": RL | {"early_stop_share": 0.5}}
    metrics = dqn.run(
        fit=data / "val.pt",
        metadata=data / "metadata.json",
        settings=StageSettings.from_config(held_half, "dqn", "teacher").as_dict(),
        outputs={name: tmp_path / f"dqn.{name}" for name in ("model", "metrics", "history")},
        vgae=outputs("teacher", "vgae")["model"],
        gat=outputs("teacher", "gat")["model"],
    )
    assert metrics["fit_graphs"] + metrics["stop_graphs"] == 50
    # Half the 20 contiguous blocks of the 50 fit graphs are held out, each block 2 or 3 graphs.
    held_blocks = 0.5 * 20
    assert held_blocks * (50 // 20) <= metrics["stop_graphs"] <= held_blocks * (50 // 20 + 1)


def run_dqn(chain, tmp_path, variant, **files):
    """The DQN stage of ``variant`` on the chain's models and metadata, with the graph files (and teachers) given;
    its outputs go to ``tmp_path`` as dqn.model, dqn.metrics and dqn.history."""
    root, outputs = chain
    return dqn.run(
        **files,
        metadata=root / "graphs" / "metadata.json",
        settings=stage_settings(variant, "dqn"),
        outputs={name: tmp_path / f"dqn.{name}" for name in ("model", "metrics", "history")},
        vgae=outputs(variant, "vgae")["model"],
        gat=outputs(variant, "gat")["model"],
    )


@pytest.mark.parametrize("bad_file", ["fit", "stop"])
def test_a_dqn_graph_file_outside_the_vocabulary_is_named(chain, tmp_path, bad_file):
    """The DQN's fit and stop files are checked against metadata.json like the VGAE's and GAT's train and val
    files: a CAN-ID index the base models have no embedding for fails naming the file, not as an IndexError deep in
    the VGAE."""
    root, outputs = chain
    data = root / "graphs"
    save_graphs(toy_graphs(30, num_ids=40, seed=4), tmp_path / "bad.pt")  # indices up to 39, num_ids is 20
    files = {"fit": data / "val.pt", "stop": data / "val.pt"} | {bad_file: tmp_path / "bad.pt"}
    with pytest.raises(
        ValueError, match=r"bad\.pt: graph \d+ has a CAN-ID index >= num_ids=20 \(metadata\.json\)"
    ):
        run_dqn(chain, tmp_path, "teacher", **files)
    assert not (tmp_path / "dqn.model").exists()


def test_the_dqn_refuses_stop_graphs_that_are_its_fit_graphs(chain, tmp_path):
    """`kdgat train dqn --fit F --stop F` (or a copy of F) early-stopped, and judged whether to keep the learnt policy,
    on the graphs the agent learnt from, and exited 0; the settings refuse fit_split == stop_split, and the VGAE
    and GAT stages refuse a val.pt that is their train.pt. The stage refuses it before training."""
    root, _ = chain
    fit = root / "graphs" / "val.pt"
    copy = tmp_path / "stop.pt"
    shutil.copyfile(fit, copy)  # the content counts, not the name
    for stop in (fit, copy):
        with pytest.raises(ValueError) as refused:
            run_dqn(chain, tmp_path, "teacher", fit=fit, stop=stop)
        assert str(refused.value).startswith(f"{stop}: the stop graphs are the fit graphs {fit}; ")
        assert not (tmp_path / "dqn.model").exists()


@pytest.mark.parametrize("role", ["fit", "stop"])
def test_the_dqn_refuses_the_graphs_its_base_models_trained_on(chain, tmp_path, role):
    """The VGAE's and GAT's model.pt record the graph file they trained on; a fusion learnt from their outputs on
    those graphs (near perfect there) would copy them, so the DQN stage refuses that file however it is named."""
    root, outputs = chain
    data = root / "graphs"
    for variant in ("teacher", "student_kd"):
        for stage in ("vgae", "gat"):
            assert trained_on(outputs(variant, stage)["model"]) == file_sha256(data / "train.pt")
    assert trained_on(outputs("teacher", "dqn")["model"]) is None
    renamed = tmp_path / "held_out.pt"
    shutil.copyfile(data / "train.pt", renamed)  # the content counts, not the name
    files = {"fit": data / "val.pt", "stop": None} | {role: renamed}
    teacher = {f"teacher_{stage}": outputs("teacher", stage)["model"] for stage in ("vgae", "gat", "dqn")}
    with pytest.raises(ValueError) as refused:
        run_dqn(chain, tmp_path, "student_kd", **files, **teacher)
    message = str(refused.value)
    assert message.startswith(f"{renamed}: the {role} graphs are the graphs vgae (")
    for name in ("vgae", "gat", "teacher_vgae", "teacher_gat"):
        assert f"{name} (" in message
    assert "kd_gat.dqn.fit_split" in message
    assert not (tmp_path / "dqn.model").exists()


def test_graphs_the_models_cannot_score_are_the_users_mistake_named_with_their_file(chain):
    """score_graphs and fusion_inputs refused no graphs and graphs of another vocabulary with a plain ValueError:
    a direct caller (or a wrapper that did not check first) got a traceback, not the one line ``<what> failed:
    <message>`` of an input error, and the message named no file."""
    from kdgat.files import FileContentError
    from kdgat.logs import failure_logged
    from wrapper_rules import InputError, InputRefused

    _, outputs = chain
    models = [load_model(outputs("teacher", stage)["model"]) for stage in ("vgae", "gat", "dqn")]
    with pytest.raises(FileContentError) as error:
        score_graphs(*models, [], batch_size=16)
    assert str(error.value) == "no graphs to score (the graphs argument is empty)"
    with pytest.raises(InputRefused) as ended, failure_logged("evaluate_detector"):
        score_graphs(*models, [], batch_size=16, source="graphs/test.pt")
    assert isinstance(ended.value.error, InputError) and ended.value.code == 1
    assert str(ended.value) == "graphs/test.pt: no graphs to score"
    other_run = toy_graphs(30, num_ids=40, seed=4)
    largest = max(int(graph.x[:, 0].max()) for graph in other_run)
    with pytest.raises(InputRefused) as ended, failure_logged("train_dqn"):
        dqn_fusion_inputs(*models[:2], other_run, 16, "cpu", source="graphs/val.pt")
    assert isinstance(ended.value.error, FileContentError)
    assert str(ended.value).startswith(
        f"graphs/val.pt: a graph holds CAN-ID index {largest}, outside the 20 "
    )


def test_the_dqn_job_scores_its_base_models_on_its_device_without_copying_them(chain, monkeypatch, tmp_path):
    """train_dqn loaded its VGAE and GAT (and the teacher's, student_kd: four models) on the CPU, so on a GPU
    fusion_inputs scored a copy of each (``evaluated`` copies a model that is not on the scoring device). Here
    the job's device is torch's "meta" device, where any model still on the CPU would be copied: every model
    scored is on the device and ``evaluated`` hands it back itself, and the teacher agent is there too."""
    from kdgat.inference import evaluated, scoring_device

    root, outputs = chain
    device = torch.device("meta")
    scored = []

    def spy(vgae_model, gat_model, graphs, batch_size, on, source=None):
        with evaluated(scoring_device(on), vgae_model, gat_model) as used:
            scored.append(
                (vgae_model, gat_model, [a is b for a, b in zip(used, (vgae_model, gat_model), strict=True)])
            )
        count = len(graphs)
        inputs = {
            "state": torch.zeros(count, 15),
            "anomaly": torch.zeros(count),
            "p_attack": torch.zeros(count),
        }
        return inputs | {"error": torch.zeros(count), "label": torch.arange(count) % 2}

    class Trained(Exception):
        pass

    def trained(*args, **kwargs):
        teacher.append(args[4])
        raise Trained

    teacher = []
    monkeypatch.setattr(dqn, "resolve_device", lambda settings: device)
    monkeypatch.setattr(dqn, "fusion_inputs", spy)
    monkeypatch.setattr(dqn, "_train", trained)
    given = {f"teacher_{stage}": outputs("teacher", stage)["model"] for stage in ("vgae", "gat", "dqn")}
    with pytest.raises(Trained):
        dqn.run(
            fit=root / "graphs" / "val.pt",
            metadata=root / "graphs" / "metadata.json",
            settings=stage_settings("student_kd", "dqn"),
            outputs={name: tmp_path / f"{name}.out" for name in ("model", "metrics", "history")},
            vgae=outputs("student_kd", "vgae")["model"],
            gat=outputs("student_kd", "gat")["model"],
            **given,
        )
    assert [not_copied for *_, not_copied in scored] == [[True, True], [True, True]]
    models = [model for vgae_model, gat_model, _ in scored for model in (vgae_model, gat_model)]
    assert len({id(model) for model in models}) == 4  # the student's two, then the teacher's two
    assert {parameter.device for model in models + teacher for parameter in model.parameters()} == {device}


def test_a_negative_can_id_index_is_refused_naming_it_before_any_model_is_touched(chain):
    """check_vocabulary looked at the largest index only: a graph with a negative one (not a preprocess output)
    reached the embedding, an IndexError naming no file on the CPU and a device-side assert on CUDA."""
    from kdgat.files import FileContentError

    _, outputs = chain
    models = [load_model(outputs("teacher", stage)["model"]) for stage in ("vgae", "gat", "dqn")]
    graphs = toy_graphs(10, num_ids=20, seed=6)
    graphs[3].x[1, 0] = -2
    with pytest.raises(FileContentError) as error:
        score_graphs(*models, graphs, batch_size=16, source="elsewhere/test.pt")
    assert str(error.value) == (
        "elsewhere/test.pt: a graph holds the negative CAN-ID index -2: node feature 0 is an index into the CAN-ID "
        "vocabulary, 0 to 19; these are no graphs of the preprocess step"
    )


@pytest.mark.parametrize(("fit_count", "stop_count"), [(1, None), (6, 3)])
def test_dqn_graphs_too_few_to_hold_out_or_cross_fit_are_refused_naming_the_files_before_scoring(
    chain, tmp_path, fit_count, stop_count
):
    """One fit graph without a stop file, or fewer fit + stop graphs than two per fold of kd_gat.dqn.keep_folds,
    was a plain ValueError from kdgat.training.held_out (the folds' only after the agent had trained): a traceback
    in the train_dqn wrapper's log, naming no file."""
    from kdgat.logs import failure_logged
    from wrapper_rules import InputError, InputRefused

    root, outputs = chain
    fit = tmp_path / "fit.pt"
    save_graphs(toy_graphs(fit_count, num_ids=20, seed=7), fit)
    stop = None
    if stop_count:
        stop = tmp_path / "stop.pt"
        save_graphs(toy_graphs(stop_count, num_ids=20, seed=8), stop)
    with pytest.raises(InputRefused) as ended, failure_logged("train_dqn"):
        dqn.run(
            fit=fit,
            stop=stop,
            metadata=root / "graphs" / "metadata.json",
            settings=stage_settings("teacher", "dqn"),
            outputs={name: tmp_path / f"{name}.out" for name in ("model", "metrics", "history")},
            vgae=outputs("teacher", "vgae")["model"],
            gat=outputs("teacher", "gat")["model"],
        )
    assert isinstance(ended.value.error, InputError)
    if stop is None:
        assert str(ended.value) == (
            f"{fit}: 1 graph: the DQN stops early on blocks held out of its fit graphs (no stop graphs given, "
            "kd_gat.dqn.stop_split) and needs at least 2"
        )
    else:
        assert str(ended.value) == (
            f"kd_gat.dqn.keep_folds: 5 folds of the fit + stop graphs need at least 10 graphs; {fit} and {stop} "
            "hold 9: lower keep_folds (0: no cross-fitting) or give more graphs"
        )
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        ["fit.pt"] + (["stop.pt"] if stop else [])
    )


def test_each_training_job_reads_each_graph_files_header_once_and_records_its_vocabulary(
    tmp_path, monkeypatch
):
    """A training job read its training graphs' header twice: once to check that every input is of one preprocess
    run (check_one_preprocess_run) and again for the vocabulary its model.pt records (train.pt in vgae/gat,
    kd_gat.dqn.fit_split's file in the dqn)."""
    from kdgat.model_store import recorded

    vocabulary = "ab" * 32
    data = tmp_path / "graphs"
    for name, count, seed, split in (
        ("train", 150, 1, "train"),
        ("val", 50, 2, "val"),
        ("fusion", 60, 3, "fusion"),
    ):
        save_graphs(
            toy_graphs(count, num_ids=20, seed=seed), data / f"{name}.pt", vocabulary=vocabulary, split=split
        )
    metadata = data / "metadata.json"
    metadata.write_text(json.dumps({"num_ids": 20, "vocabulary": {"digest": vocabulary}}))
    short = {**KD_GAT, "training": {stage: {**TRAINING, "epochs": 1} for stage in ("vgae", "gat", "dqn")}}

    def outputs(stage):
        return {
            name: tmp_path / stage / f"{name}.{ext}"
            for name, ext in (("model", "pt"), ("metrics", "json"), ("history", "csv"))
        }

    def settings(stage):
        return StageSettings.from_config(short, stage, "teacher").as_dict()

    graphs = {"train": data / "train.pt", "val": data / "val.pt", "metadata": metadata}
    jobs = {
        "vgae": lambda: vgae.run(**graphs, settings=settings("vgae"), outputs=outputs("vgae")),
        "gat": lambda: gat.run(
            **graphs, settings=settings("gat"), outputs=outputs("gat"), vgae=outputs("vgae")["model"]
        ),
        "dqn": lambda: dqn.run(
            fit=data / "fusion.pt",
            stop=data / "val.pt",
            metadata=metadata,
            settings=settings("dqn"),
            outputs=outputs("dqn"),
            vgae=outputs("vgae")["model"],
            gat=outputs("gat")["model"],
        ),
    }
    reads = {}
    for stage, job in jobs.items():
        with monkeypatch.context() as patch:
            reads[stage] = count_header_reads(patch)
            job()
        assert recorded(outputs(stage)["model"], "vocabulary") == vocabulary
    assert reads == {
        "vgae": {"train.pt": 1, "val.pt": 1},
        "gat": {"train.pt": 1, "val.pt": 1},
        "dqn": {"fusion.pt": 1, "val.pt": 1},
    }

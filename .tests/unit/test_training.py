"""Training loop: resume after a crash or a SIGKILL gives the same model as an uninterrupted run, early stopping,
device selection, the GPU memory record (null on the CPU), and clear errors on bad input."""

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from kdgat.graph_store import save_graphs
from kdgat.models.vgae import ERROR_TERMS
from kdgat.runtime import select_device
from kdgat.testing import toy_graphs
from kdgat.training import dqn as dqn_training
from kdgat.training import gat as gat_training
from kdgat.training import vgae as vgae_training
from kdgat.training.loop import KILL_AFTER_EPOCH_ENV
from kdgat.training.settings import StageSettings
from kdgat.training.stage import gpu_peak_mb
from kdgat.training.vgae import graph_errors

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NUM_IDS = 20
TRAINING = {
    "epochs": 4,
    "batch_size": 16,
    "lr": 0.005,
    "weight_decay": 1e-4,
    "patience": 10,
    "grad_clip": 1.0,
}
CURRICULUM = {
    "enabled": True,
    "start_ratio": 1.0,
    "end_ratio": 3.0,
    "start_percentile": 0.0,
    "end_percentile": 50.0,
}
LOSS = {"id_weight": 0.1, "neighbour_weight": 0.05, "kl_weight": 0.01}


def settings(stage, training=None, **section):
    """The teacher's settings of `stage` with the demo_student preset, curriculum off unless given."""
    config = {
        "teacher_preset": "demo_student",
        "seed": 5,
        "device": "cpu",
        "training": {stage: TRAINING | (training or {})},
        "curriculum": {"enabled": False},
    }
    return StageSettings.from_config(config | section, stage, "teacher")


@pytest.fixture(scope="module")
def graphs():
    return toy_graphs(120, num_ids=NUM_IDS, seed=1), toy_graphs(40, num_ids=NUM_IDS, seed=2)


@pytest.fixture(scope="module")
def trained_vgae(graphs):
    train, val = graphs
    model, *_ = vgae_training.train(train, val, NUM_IDS, settings("vgae", vgae_loss=LOSS))
    return model


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def losses(history):
    return [{k: v for k, v in row.items() if k not in {"seconds", "graphs_per_s"}} for row in history]


def crash_at(monkeypatch, stage_class, epoch_to_crash):
    original = stage_class.train_epoch

    def train_epoch(self, epoch):
        if epoch == epoch_to_crash:
            raise RuntimeError("simulated node failure")
        return original(self, epoch)

    monkeypatch.setattr(stage_class, "train_epoch", train_epoch)


def test_gat_resumes_after_a_crash_with_the_same_result(graphs, trained_vgae, tmp_path, monkeypatch):
    train, val = graphs
    gat_settings = settings("gat", curriculum=CURRICULUM)
    reference, reference_result, metrics, _ = gat_training.train(
        train, val, NUM_IDS, gat_settings, vgae=trained_vgae
    )
    assert metrics["gpu_peak_mem_mb"] is None  # trained on the CPU: no GPU peak recorded

    checkpoint = tmp_path / "last.pt"
    with monkeypatch.context() as patch:
        crash_at(patch, gat_training.GATStage, 2)  # dies during the third epoch
        with pytest.raises(RuntimeError, match="simulated"):
            gat_training.train(train, val, NUM_IDS, gat_settings, checkpoint, vgae=trained_vgae)
    assert torch.load(checkpoint, weights_only=False)["epoch"] == 1

    resumed, result, *_ = gat_training.train(train, val, NUM_IDS, gat_settings, checkpoint, vgae=trained_vgae)
    assert result["resumed_from"] == 1
    assert same_weights(resumed, reference)
    assert losses(result["history"]) == losses(reference_result["history"])


def test_gat_history_logs_each_epochs_curriculum_draw(graphs, trained_vgae):
    train, val = graphs
    _, result, *_ = gat_training.train(
        train, val, NUM_IDS, settings("gat", curriculum=CURRICULUM), vgae=trained_vgae
    )
    normals = sum(int(g.y) == 0 for g in train)
    attacks = len(train) - normals
    for epoch, row in enumerate(result["history"]):
        ratio, percentile = 1.0 + 2.0 * epoch / 3, 50.0 * epoch / 3  # CURRICULUM over TRAINING's 4 epochs
        assert row["curriculum_ratio"] == pytest.approx(ratio)
        assert row["curriculum_percentile"] == pytest.approx(percentile)
        assert row["curriculum_pool"] <= normals
        assert row["curriculum_normals"] == min(row["curriculum_pool"], round(ratio * attacks))
        assert row["train_attack_share"] == pytest.approx(attacks / (attacks + row["curriculum_normals"]))


def test_vgae_anomaly_error_is_calibrated_on_normal_validation_windows(graphs, trained_vgae):
    _, val = graphs
    normal_val = [g for g in val if int(g.y) == 0]
    errors = graph_errors(trained_vgae, normal_val, 64, "cpu")
    for i, term in enumerate(ERROR_TERMS):  # each term's statistics over the normal validation windows
        assert float(trained_vgae.error_mean[i]) == pytest.approx(errors[term].mean(), rel=1e-4)
        assert float(trained_vgae.error_std[i]) == pytest.approx(errors[term].std(), rel=1e-3)


def test_dqn_resumes_after_a_crash_with_the_same_result(tmp_path, monkeypatch):
    generator = torch.Generator().manual_seed(0)

    def inputs(n):
        label = torch.randint(0, 2, (n,), generator=generator)
        p_attack = (label.float() * 0.6 + torch.rand(n, generator=generator) * 0.4).clamp(0, 1)
        anomaly = torch.rand(n, generator=generator)
        state = torch.cat([torch.rand(n, 13, generator=generator), anomaly[:, None], p_attack[:, None]], 1)
        return {"state": state, "anomaly": anomaly, "p_attack": p_attack, "label": label}

    train, val = inputs(300), inputs(100)
    rl = {
        "buffer_size": 500,
        "batch_size": 32,
        "steps_per_episode": 64,
        "updates_per_episode": 4,
        "gamma": 0.2,
        "target_update": 3,
        "eps_start": 1.0,
        "eps_end": 0.1,
    }
    dqn_settings = settings("dqn", training={"epochs": 6, "lr": 0.001}, dqn=rl)
    reference, reference_result, metrics, _ = dqn_training.train(train, val, dqn_settings)
    assert metrics["gpu_peak_mem_mb"] is None  # trained on the CPU: no GPU peak recorded

    checkpoint = tmp_path / "dqn.pt"
    with monkeypatch.context() as patch:
        crash_at(patch, dqn_training.DQNStage, 3)
        with pytest.raises(RuntimeError):
            dqn_training.train(train, val, dqn_settings, checkpoint)
    resumed, result, *_ = dqn_training.train(train, val, dqn_settings, checkpoint)
    assert result["resumed_from"] == 2
    assert same_weights(resumed, reference)
    assert losses(result["history"]) == losses(reference_result["history"])


def test_checkpoint_of_other_settings_is_not_resumed(graphs, tmp_path, monkeypatch):
    train, val = graphs
    checkpoint = tmp_path / "last.pt"
    with monkeypatch.context() as patch:
        crash_at(patch, gat_training.GATStage, 1)
        with pytest.raises(RuntimeError):
            gat_training.train(train, val, NUM_IDS, settings("gat"), checkpoint)
    other = settings("gat", training={"lr": 0.001})
    _, result, *_ = gat_training.train(train, val, NUM_IDS, other, checkpoint)
    assert result["resumed_from"] is None and len(result["history"]) == TRAINING["epochs"]


def test_early_stopping_stops_when_validation_loss_stalls(graphs):
    train, val = graphs
    frozen = settings("gat", training={"epochs": 10, "lr": 1e-12, "patience": 2})
    _, result, metrics, _ = gat_training.train(train, val, NUM_IDS, frozen)
    assert len(result["history"]) < 10
    assert metrics["epochs_run"] == len(result["history"])


def test_gat_training_on_attack_free_graphs_only_warns_that_it_learns_one_class(graphs, caplog):
    train, val = graphs
    normal = [graph for graph in train if int(graph.y) == 0]
    with caplog.at_level(logging.WARNING, logger="kdgat.training"):
        gat_training.train(normal, val, NUM_IDS, settings("gat", training={"epochs": 1}))
    assert "every training graph is attack-free: the classifier learns one class only" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kdgat.training"):
        gat_training.train(train, val, NUM_IDS, settings("gat", training={"epochs": 1}))
    assert "learns one class only" not in caplog.text


KILLED_RUN = textwrap.dedent(
    """
    import json, sys
    import torch
    torch.set_num_threads(1)
    from kdgat.testing import toy_graphs
    from kdgat.training import gat
    from kdgat.training.settings import StageSettings
    checkpoint, out = sys.argv[1], sys.argv[2]
    training = {"epochs": 5, "batch_size": 16, "lr": 0.005, "weight_decay": 1e-4, "patience": 10, "grad_clip": 1.0}
    config = {"teacher_preset": "demo_student", "seed": 3, "device": "cpu", "training": {"gat": training},
              "curriculum": {"enabled": False}}
    settings = StageSettings.from_config(config, "gat", "teacher")
    model, result, _, _ = gat.train(toy_graphs(100, 20, seed=1), toy_graphs(30, 20, seed=2), 20, settings,
                                    checkpoint if checkpoint != "-" else None)
    torch.save({"state": model.state_dict(), "history": result["history"],
                "resumed_from": result["resumed_from"]}, out)
    """
)


def test_killed_training_process_resumes_from_its_last_epoch(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(KILLED_RUN)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    run = [sys.executable, str(script)]
    subprocess.run([*run, "-", str(tmp_path / "reference.pt")], check=True, env=env, timeout=300)

    checkpoint = tmp_path / "ckpt" / "last.pt"
    killed = subprocess.run(
        [*run, str(checkpoint), str(tmp_path / "never.pt")],
        env={**env, KILL_AFTER_EPOCH_ENV: "2"},
        timeout=300,
    )
    assert killed.returncode == -9  # SIGKILL right after the checkpoint of epoch 2
    assert not (tmp_path / "never.pt").exists()
    subprocess.run([*run, str(checkpoint), str(tmp_path / "resumed.pt")], check=True, env=env, timeout=300)

    reference = torch.load(tmp_path / "reference.pt", weights_only=False)
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=False)
    assert resumed["resumed_from"] == 1  # 0-based: epochs 1 and 2 were done, it went on with epoch 3
    assert all(torch.equal(reference["state"][k], resumed["state"][k]) for k in reference["state"])
    assert losses(resumed["history"]) == losses(reference["history"])


def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="kd_gat.device"):
            select_device("cuda")


def test_job_on_the_cpu_writes_a_null_gpu_peak(graphs, tmp_path):
    train, val = graphs
    inputs = {
        "train": tmp_path / "train.pt",
        "val": tmp_path / "val.pt",
        "metadata": tmp_path / "metadata.json",
    }
    save_graphs(train, inputs["train"])
    save_graphs(val, inputs["val"])
    inputs["metadata"].write_text(json.dumps({"num_ids": NUM_IDS}))
    outputs = {
        name: tmp_path / f"{name}.{ext}"
        for name, ext in (("model", "pt"), ("metrics", "json"), ("history", "csv"))
    }
    one_epoch = settings("vgae", training={"epochs": 1}, vgae_loss=LOSS)
    vgae_training.run(**inputs, outputs=outputs, settings=one_epoch)
    written = json.loads(outputs["metrics"].read_text())
    assert written["device"] == "cpu"
    assert "gpu_peak_mem_mb" in written and written["gpu_peak_mem_mb"] is None  # null, never a made-up number


def test_gpu_peak_is_read_from_the_cuda_allocator_only(monkeypatch):
    """The CUDA branch cannot run here (no GPU): its contract is that only a CUDA device asks the caching
    allocator for its reserved peak, converted from bytes to MB; every other device measures nothing."""
    asked = []

    def max_memory_reserved(device):
        asked.append(device)
        return 3 * 2**30 + 2**19  # 3 GiB and half a MiB, in bytes

    monkeypatch.setattr(torch.cuda, "max_memory_reserved", max_memory_reserved)
    assert gpu_peak_mb(torch.device("cpu")) is None and gpu_peak_mb(torch.device("meta")) is None
    assert asked == []
    assert gpu_peak_mb(torch.device("cuda", 1)) == 3072.5
    assert asked == [torch.device("cuda", 1)]


def test_bad_preprocess_files_give_clear_errors(tmp_path):
    outputs = {k: str(tmp_path / f"out.{k}") for k in ("model", "metrics", "history")}
    inputs = {name: tmp_path / file for name, file in (("train", "train.pt"), ("val", "val.pt"))}
    inputs["metadata"] = tmp_path / "metadata.json"

    def run():
        vgae_training.run(**inputs, outputs=outputs, settings=settings("vgae", vgae_loss=LOSS))

    with pytest.raises(FileNotFoundError, match="metadata.json"):
        run()
    (tmp_path / "metadata.json").write_text(json.dumps({"num_ids": "many"}))
    with pytest.raises(ValueError, match="num_ids"):
        run()
    (tmp_path / "metadata.json").write_text(json.dumps({"num_ids": 5}))
    with pytest.raises(FileNotFoundError, match="train.pt"):
        run()
    with pytest.raises(ValueError, match="settings for the gat stage were given to the vgae stage"):
        vgae_training.run(**inputs, outputs=outputs, settings=settings("gat"))


def test_graphs_breaking_the_contract_are_rejected():
    from kdgat.training.data import check_graphs

    graphs = toy_graphs(3, num_ids=20, seed=0)
    with pytest.raises(ValueError, match=r"train.pt: graph 0 has a CAN-ID index >= num_ids=10"):
        check_graphs(graphs, 10, "train.pt")
    graphs[1].x = graphs[1].x[:, :5]
    with pytest.raises(ValueError, match=r"graph 1 has x of shape .* expected \[N, 11\]"):
        check_graphs(graphs, 20, "train.pt")

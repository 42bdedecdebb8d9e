"""Benchmark of the evaluation step: what the result stash saves after a failed group job, and metric cost.

1. evaluation_restore: `kdgat.evaluation.run.evaluate_files` restoring a finished evaluation from the stash (what a
   group member does after a sibling failed) against the same call computing it (scoring, metrics, speed, plots).
   Goal: restoring costs at most a tenth of recomputing.
2. evaluation_metrics: `binary_metrics` for one model on N windows against scikit-learn's plain
   `roc_auc_score` on the same arrays (the single most expensive metric). Goal: every metric together within 10x
   of that one call.

Models are the kd_gat demo sizes with random weights and graphs are random window graphs of the real format:
the costs measured do not depend on how well the detector works.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch_geometric.data import Data

from kdgat.chain import EDGE_FEATURES
from kdgat.evaluation.metrics import binary_metrics
from kdgat.evaluation.run import evaluate_files
from kdgat.graph_store import save_graph_sets, save_graphs
from kdgat.model_store import save_model
from kdgat.models import GAT, VGAE, QNetwork

NUM_IDS = 30


def random_graph(generator: torch.Generator, label: int, nodes: int = 20) -> Data:
    x = torch.rand(nodes, 11, generator=generator)
    x[:, 0] = torch.randint(0, NUM_IDS, (nodes,), generator=generator).float()
    source = torch.arange(nodes)
    edge_index = torch.stack([source, (source + 1) % nodes])
    return Data(
        x=x,
        edge_index=edge_index,
        edge_attr=torch.ones(nodes, EDGE_FEATURES),  # each edge of the ring stands for one message
        y=torch.tensor([label]),
    )


def make_inputs(root: Path, graphs: int) -> dict[str, Path]:
    generator = torch.Generator().manual_seed(0)
    save_graphs([random_graph(generator, i % 4 == 0) for i in range(graphs)], root / "val.pt")
    save_graph_sets({"dos": [random_graph(generator, i % 2) for i in range(graphs)]}, root / "test.pt")
    vgae_config = {"num_ids": NUM_IDS, "hidden_dims": (64, 32), "latent_dim": 16}
    vgae = VGAE(**vgae_config)
    vgae.anomaly_threshold.fill_(0.1)
    save_model(vgae, "vgae", vgae_config, root / "vgae.pt")
    save_model(GAT(num_ids=NUM_IDS), "gat", {"num_ids": NUM_IDS}, root / "gat.pt")
    save_model(QNetwork(), "dqn", {}, root / "dqn.pt")
    return {name: root / f"{name}.pt" for name in ("vgae", "gat", "dqn", "val", "test")}


def bench_restore(graphs: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench_evaluate_"))
    try:
        inputs = make_inputs(root, graphs)
        outputs = {
            "metrics": root / "out/metrics.json",
            "scores": root / "out/scores.parquet",
            "roc": root / "out/roc.svg",
            "pr": root / "out/pr.svg",
            "confusion": root / "out/confusion.svg",
        }
        kwargs = {
            **{k: str(v) for k, v in inputs.items()},
            "outputs": outputs,
            "dataset": "bench",
            "variant": "teacher",
            "device": "cpu",
            "speed": {"repeats": 3, "latency_runs": 10, "max_graphs": 256},
            "stash_dir": root / "stash",
        }
        start = time.perf_counter()
        evaluate_files(**kwargs)
        computed = time.perf_counter() - start
        for path in outputs.values():
            path.unlink()  # what Snakemake does to a failed group job's members
        start = time.perf_counter()
        evaluate_files(**kwargs)
        restored = time.perf_counter() - start
        assert outputs["metrics"].is_file()
        print(
            f"# {graphs} validation + {graphs} test graphs; compute {computed:.2f}s, restore {restored:.3f}s"
        )
        print(
            f"BENCH evaluation_restore value={restored:.3f}s baseline={computed:.3f}s "
            f"ratio={restored / computed:.4f} goal=<=0.1"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench_metrics(windows: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(windows) < 0.2).astype(int)
    scores = np.clip(rng.normal(0.3 + 0.4 * labels, 0.2), 0, 1)
    predictions = (scores >= 0.5).astype(int)

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    ours = best(lambda: binary_metrics(labels, scores, predictions))
    baseline = best(lambda: roc_auc_score(labels, scores))
    print(f"# {windows} windows, best of {repeats}")
    print(
        f"BENCH evaluation_metrics value={ours * 1e3:.1f}ms baseline={baseline * 1e3:.1f}ms "
        f"ratio={ours / baseline:.2f} goal=<=10"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", type=int, default=512, help="validation and test graphs each")
    parser.add_argument("--windows", type=int, default=1_000_000, help="windows for the metric benchmark")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    bench_restore(args.graphs)
    bench_metrics(args.windows, args.repeats)


if __name__ == "__main__":
    main()

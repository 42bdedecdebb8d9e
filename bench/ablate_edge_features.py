"""Ablation: does the GAT gain from seeing the 11 edge features in its attention (GATConv ``edge_dim``)?

For each dataset folder (preprocess outputs: train.pt, val.pt, test.pt, metadata.json) and each seed, trains the
GAT of one preset twice through kdgat.training.gat.train, with the same settings, seed and data: once as shipped
(edge_features off) and once with edge_features on; curriculum off (it would add a VGAE per seed and is the same
for both). Reports test F1 per scenario and pooled: mean over seeds with a 95% t-interval, and the paired
difference (with − without) with its interval.

Example (the demo datasets, after `snakemake preprocess_all`):
  .venv/bin/python bench/ablate_edge_features.py results/preprocess/synth_hcrl results/preprocess/synth_cantt \
      --seeds 1 2 3 4 5
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from scipy import stats
from sklearn.metrics import f1_score

from kdgat.chain import DECISION_THRESHOLD
from kdgat.graph_store import load_graph_sets, load_graphs
from kdgat.training import gat as gat_training
from kdgat.training.data import make_loader
from kdgat.training.settings import StageSettings

REPO = Path(__file__).resolve().parents[1]


def interval(values) -> tuple[float, float]:
    """(mean, half-width of the 95% t-interval) over seeds."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(stats.t.ppf(0.975, len(values) - 1) * stats.sem(values))


def test_f1(model, test_sets) -> dict[str, float]:
    """GAT F1 (p(attack) > 0.5) per test scenario and pooled."""
    model.eval()
    predictions, labels = {}, {}
    with torch.no_grad():
        for scenario, graphs in test_sets.items():
            probs = []
            for batch in make_loader(graphs, 256):
                logits = model(batch.x, batch.edge_index, batch.batch, batch.edge_attr)
                probs.append(torch.softmax(logits, dim=1)[:, 1])
            predictions[scenario] = (torch.cat(probs) > DECISION_THRESHOLD).numpy()
            labels[scenario] = np.array([int(g.y) for g in graphs])
    f1 = {s: f1_score(labels[s], predictions[s], zero_division=0) for s in test_sets}
    f1["pooled"] = f1_score(
        np.concatenate(list(labels.values())), np.concatenate(list(predictions.values())), zero_division=0
    )
    return f1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", type=Path, help="preprocess output folders")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--preset", default=None, help="GAT preset (default: config.yaml's teacher_preset)")
    parser.add_argument("--config", type=Path, default=REPO / "config" / "config.yaml")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write the per-run table here (CSV)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kd_gat = yaml.safe_load(args.config.read_text())["kd_gat"]
    preset = args.preset or kd_gat["teacher_preset"]
    rows = []
    for folder in args.datasets:
        train, val = load_graphs(folder / "train.pt"), load_graphs(folder / "val.pt")
        test_sets = load_graph_sets(folder / "test.pt")
        num_ids = int(json.loads((folder / "metadata.json").read_text())["num_ids"])
        for seed in args.seeds:
            for edges in (False, True):
                section = {
                    **{k: kd_gat[k] for k in ("training", "presets") if k in kd_gat},
                    "teacher_preset": preset,
                    "seed": seed,
                    "device": "cpu",
                    "curriculum": {"enabled": False},
                }
                settings = StageSettings.from_config(section, "gat", "teacher")
                settings = StageSettings.from_dict(
                    settings.as_dict() | {"model": settings.model | {"edge_features": edges}}
                )
                model, _, metrics, _ = gat_training.train(train, val, num_ids, settings)
                f1 = test_f1(model, test_sets)
                for scenario, value in f1.items():
                    rows.append(
                        {
                            "dataset": folder.name,
                            "seed": seed,
                            "edge_features": edges,
                            "scenario": scenario,
                            "f1": value,
                            "parameters": metrics["num_parameters"],
                        }
                    )
                print(
                    f"# {folder.name} seed {seed} edge_features={edges}: "
                    + json.dumps({k: round(v, 4) for k, v in f1.items()}),
                    flush=True,
                )
    table = pd.DataFrame(rows)
    if args.out:
        table.to_csv(args.out, index=False)
    print(f"\npreset {preset}, seeds {args.seeds}: test F1 mean ± 95% interval over seeds")
    print("| dataset | scenario | without | with edge features | paired difference |")
    print("|---|---|---|---|---|")
    for (dataset, scenario), group in table.groupby(["dataset", "scenario"], sort=False):
        without = group[~group["edge_features"]].sort_values("seed")["f1"].to_numpy()
        with_edges = group[group["edge_features"]].sort_values("seed")["f1"].to_numpy()
        cells = [interval(without), interval(with_edges), interval(with_edges - without)]
        print(f"| {dataset} | {scenario} | " + " | ".join(f"{m:.3f} ± {h:.3f}" for m, h in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GAT training throughput: the catalog's training loop (kdgat.training.gat, with its epoch loop, checkpointing,
gradient clipping and metrics) against a minimal bare PyG loop over the same graphs, batch size, model and seed.

Both run in this process, interleaved over several rounds so that machine load affects them alike; the figure
is the median per-epoch throughput (graphs/s) over the training epochs (validation excluded for both).
Prints: BENCH train_gat value=<ours>graphs/s baseline=<bare>graphs/s ratio=<ours/bare> goal=>=0.9
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch_geometric.loader import DataLoader

from kdgat.models import GAT
from kdgat.presets import resolve_preset
from kdgat.testing import toy_graphs
from kdgat.training import gat as gat_training
from kdgat.training.settings import StageSettings

NUM_IDS = 50
EPOCHS = 4
ROUNDS = 3
BATCH_SIZE = 64
PRESET = "student"  # the real student size (49K parameters): small models expose loop overhead the most


def ours(train, val, checkpoint: Path) -> list[float]:
    training = {
        "epochs": EPOCHS,
        "batch_size": BATCH_SIZE,
        "lr": 0.003,
        "weight_decay": 1e-4,
        "patience": EPOCHS,
    }
    config = {"student_preset": PRESET, "seed": 0, "device": "cpu", "training": {"gat": training}}
    # no curriculum: the bare loop below trains on every graph too
    settings = StageSettings.from_config(config | {"curriculum": {"enabled": False}}, "gat", "student")
    checkpoint.unlink(missing_ok=True)
    _, result, _, _ = gat_training.train(train, val, NUM_IDS, settings, checkpoint)
    return [row["graphs_per_s"] for row in result["history"]]


def bare(train) -> list[float]:
    torch.manual_seed(0)
    model = GAT(NUM_IDS, **resolve_preset(PRESET, "gat"))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.003, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(0)
    rates = []
    for _ in range(EPOCHS):
        model.train()
        started = time.perf_counter()
        for batch in DataLoader(train, batch_size=BATCH_SIZE, shuffle=True, generator=generator):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(batch.x, batch.edge_index, batch.batch), batch.y.view(-1))
            loss.backward()
            optimizer.step()
        rates.append(len(train) / (time.perf_counter() - started))
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rounds", type=int, default=ROUNDS, help="interleaved rounds of both loops (default: 3)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    train = toy_graphs(2000, num_ids=NUM_IDS, seed=1)
    val = toy_graphs(200, num_ids=NUM_IDS, seed=2)
    ours_rates, bare_rates = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            bare_rates += bare(train)
            ours_rates += ours(train, val, Path(tmp) / "last.pt")
    value, baseline = statistics.median(ours_rates), statistics.median(bare_rates)
    ratio = value / baseline
    print(
        f"BENCH train_gat value={value:.0f}graphs/s baseline={baseline:.0f}graphs/s ratio={ratio:.3f} goal=>=0.9"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

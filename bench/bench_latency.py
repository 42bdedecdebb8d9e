"""Single-window detection latency: VGAE + GAT + DQN fusion on one window graph, batch of one, one CPU thread.

The real `student` preset against the real `teacher` preset (kdgat.presets, the original KD-GAT sizes) in the same
run, both through kdgat.inference.WindowDetector (the single-window path), and, for reference, the student through
the batched path (kdgat.inference.score_graphs on a one-graph list: PyG batching and message passing).

Windows: 100 messages of periodic traffic on 29 CAN IDs (a 30-entry vocabulary with the out-of-vocabulary index,
the original's size), built by kdgat.graphs.build_graphs like preprocess does: ~27 nodes and ~60 edges each.
Latency depends on the architecture, not on the weights: the models are untrained with a set VGAE threshold.
Contenders take turns over ROUNDS rounds so machine load hits them alike; the figure is the median over all calls
of the time from window graph to decision (`Detection`).
Prints:
  BENCH latency_student_vs_teacher value=<student>ms baseline=<teacher>ms ratio=<s/t> goal=<=0.5
  BENCH latency_student value=<student>ms baseline=<student, batched path>ms ratio=<...> goal=<=3ms (on value)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from kdgat.graphs import build_graphs
from kdgat.inference import WindowDetector, score_graphs
from kdgat.models import GAT, VGAE, QNetwork
from kdgat.presets import REFERENCE_NUM_IDS, resolve_preset

WINDOW = 100
GOAL_MS = 3.0
GOAL_RATIO = 0.5


def window_graphs(count: int, seed: int = 0) -> list:
    """`count` windows of periodic CAN traffic (periods 10-100 ms, jittered) over REFERENCE_NUM_IDS - 1 IDs."""
    rng = np.random.default_rng(seed)
    ids = REFERENCE_NUM_IDS - 1  # the last index is out-of-vocabulary
    periods = rng.choice([0.01, 0.02, 0.05, 0.1], size=ids, p=[0.4, 0.3, 0.2, 0.1])
    duration = (count + 1) * WINDOW / np.sum(1 / periods)
    times, can_ids = [], []
    for can_id, period in enumerate(periods):
        ticks = np.arange(rng.uniform(0, period), duration, period)
        times.append(ticks + rng.normal(0, period * 0.02, len(ticks)))
        can_ids.append(np.full(len(ticks), can_id))
    order = np.argsort(np.concatenate(times), kind="stable")
    id_index = np.concatenate(can_ids)[order]
    payload = rng.integers(0, 256, (len(id_index), 8), dtype=np.uint8)
    label = np.zeros(len(id_index), dtype=np.int64)
    graphs = build_graphs(id_index, payload, label, REFERENCE_NUM_IDS, WINDOW, WINDOW).to_data_list()
    return graphs[:count]


def models(preset: str, seed: int = 0):
    torch.manual_seed(seed)
    vgae = VGAE(REFERENCE_NUM_IDS, **resolve_preset(preset, "vgae")).eval()
    vgae.anomaly_threshold.fill_(0.5)
    gat = GAT(REFERENCE_NUM_IDS, **resolve_preset(preset, "gat")).eval()
    dqn = QNetwork(**resolve_preset(preset, "dqn")).eval()
    return vgae, gat, dqn


def time_calls(call, graphs, warmup: int = 20) -> list[float]:
    """Seconds per call, one graph per call (the first `warmup` calls are not kept)."""
    for graph in graphs[:warmup]:
        call(graph)
    times = []
    for graph in graphs:
        started = time.perf_counter()
        call(graph)
        times.append(time.perf_counter() - started)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--windows", type=int, default=200, help="windows per contender and round")
    args = parser.parse_args()
    torch.set_num_threads(1)
    graphs = window_graphs(args.windows)
    nodes = statistics.median(g.num_nodes for g in graphs)
    edges = statistics.median(g.num_edges for g in graphs)
    student, teacher = models("student"), models("teacher")
    detectors = {"student": WindowDetector(*student), "teacher": WindowDetector(*teacher)}
    contenders = {
        name: (lambda graph, detector=detector: detector(graph.x, graph.edge_index))
        for name, detector in detectors.items()
    }
    contenders["student_batched"] = lambda graph: score_graphs(*student, [graph], batch_size=1)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    with torch.inference_mode():
        for _ in range(args.rounds):
            for name, call in contenders.items():
                times[name] += time_calls(call, graphs)
    ms = {name: 1000 * statistics.median(values) for name, values in times.items()}
    p90 = {name: 1000 * float(np.percentile(values, 90)) for name, values in times.items()}
    print(
        f"# {len(graphs)} windows x {args.rounds} rounds, median {nodes:.0f} nodes / {edges:.0f} edges, "
        f"vocabulary {REFERENCE_NUM_IDS}, torch threads {torch.get_num_threads()}"
    )
    for name in contenders:
        print(f"# {name}: median {ms[name]:.3f} ms, p90 {p90[name]:.3f} ms")
    ratio = ms["student"] / ms["teacher"]
    print(
        f"BENCH latency_student_vs_teacher value={ms['student']:.3f}ms baseline={ms['teacher']:.3f}ms "
        f"ratio={ratio:.3f} goal=<={GOAL_RATIO}"
    )
    print(
        f"BENCH latency_student value={ms['student']:.3f}ms baseline={ms['student_batched']:.3f}ms "
        f"ratio={ms['student'] / ms['student_batched']:.3f} goal=<={GOAL_MS}ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The BENCH line check (.tests/benchlines.py) that test_benchmarks.py applies to every line a benchmark prints:
it accepts the conventions the benchmarks use and rejects an inverted ratio, a ratio of other figures, a goal
pointing the way worse goes or in another unit; and every BENCH line the documents quote passes it."""

from __future__ import annotations

import re
import subprocess

import pytest
from benchlines import goal_met, parse, problems, recorded
from testkit import REPO

CONSISTENT = [
    # a cost against its baseline, lower is better: value/baseline, goal <=
    "BENCH preprocess_end_to_end value=0.180s baseline=0.096s ratio=1.88 goal=<=2",
    # a rate: value/baseline, goal >=
    "BENCH preprocess_throughput value=6826004msg/s baseline=12856648msg/s ratio=0.531 goal=>=0.500",
    # a speed-up of a time: baseline/value, goal >=
    "BENCH simulate_cheap_5000_vs_one_task_each value=0.174s baseline=8.351s ratio=48.04 goal=>=10",
    # an absolute goal on the value, in the line's unit
    "BENCH simulate_overhead_warm value=0.042s baseline=5.000s ratio=0.01 goal=<=0.2s",
    "BENCH preprocess_scale_peak_memory value=2307MB baseline=2061MB ratio=1.12 goal=<=4096MB",
    # figures too close to tell the ratio's form, or a baseline printed as 0
    "BENCH calibrate_beta_error_median value=0.3% baseline=0.3% ratio=1.06 goal=<=5%",
    "BENCH calibrate_beta_error_median_mean_field value=0.0% baseline=0.0% ratio=inf goal=info",
]


@pytest.mark.parametrize("line", CONSISTENT)
def test_the_benchmarks_conventions_pass(line):
    fields = parse(line)
    assert fields is not None and problems(fields) == []


@pytest.mark.parametrize(
    "line, problem",
    [
        # preprocess_end_to_end with raw / ours: a slower preprocessing would read as a better ratio
        (
            "BENCH preprocess_end_to_end value=0.180s baseline=0.096s ratio=0.53 goal=<=2",
            "a better s makes it larger",
        ),
        # a speed-up printed with the goal's direction of a cost
        (
            "BENCH simulate_200_one_job_vs_200_jobs value=4.243s baseline=36.220s ratio=8.54 goal=<=10",
            "larger",
        ),
        # a ratio of something other than the printed figures (a baseline from another run)
        ("BENCH train_gat value=9936graphs/s baseline=10426graphs/s ratio=0.80 goal=>=0.9", "neither"),
        # an absolute goal the wrong way, or in another unit than the value
        ("BENCH simulate_overhead_cold value=1.014s baseline=5.000s ratio=0.20 goal=>=2s", "better lower"),
        ("BENCH latency_student value=0.456ms baseline=3.422ms ratio=0.133 goal=<=3.0s", "is in 's'"),
        ("BENCH x value=3furlongs baseline=4furlongs ratio=0.75 goal=<=1", "not known"),
    ],
)
def test_a_line_whose_figures_disagree_is_a_problem(line, problem):
    fields = parse(line)
    assert fields is not None
    found = problems(fields)
    assert any(problem in text for text in found), found


def test_a_goal_with_a_unit_is_met_by_the_value_one_without_by_the_ratio():
    # 0.5 s added against a 5 s budget: ratio 0.10 meets "<=0.2" but the value misses "<=0.2s"
    assert goal_met(parse("BENCH a value=0.500s baseline=5.000s ratio=0.10 goal=<=0.2")) is True
    assert goal_met(parse("BENCH a value=0.500s baseline=5.000s ratio=0.10 goal=<=0.2s")) is False
    assert goal_met(parse("BENCH b value=4.243s baseline=36.220s ratio=8.54 goal=>=10")) is False
    assert goal_met(parse("BENCH c value=0.456ms baseline=1.058ms ratio=0.431 goal=info")) is None


def test_every_bench_line_the_documents_quote_is_well_formed_and_consistent():
    documents = subprocess.run(
        ["git", "ls-files", "*.md"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    quoted = {
        (document, number, text): fields
        for document in documents
        for number, text, fields in recorded((REPO / document).read_text())
    }
    assert len(quoted) > 50  # bench/RESULTS.md's figures at least
    wrong = {
        where: fields and problems(fields)
        for where, fields in quoted.items()
        if fields is None or problems(fields)
    }
    assert not wrong, "\n".join(
        f"{d}:{n}: {t}\n    {p or 'not a BENCH line'}" for (d, n, t), p in wrong.items()
    )


def test_the_whole_suites_figures_are_those_of_its_verbatim_output():
    """bench/RESULTS.md's reference run of `make bench`: the number of scripts and the total it states are those of
    the run's quoted output (a script's "took" line each, and make's own total)."""
    section = (
        (REPO / "bench" / "RESULTS.md").read_text().split("## The whole suite", 1)[1].split("\n## ", 1)[0]
    )
    output = section.split("```", 2)[1]
    took = [int(s) for s in re.findall(r"^# bench/bench_\w+\.py took (\d+) s$", output, re.M)]
    total = int(re.search(r"^# make bench: all scripts took (\d+) s", output, re.M)[1])
    stated = re.search(r"\*\*All (\w+) scripts took (\d+) s", section)
    assert stated, "the section no longer states the suite's time as '**All <n> scripts took <t> s'"
    numbers = {"seven": 7, "eight": 8, "nine": 9, "ten": 10}
    assert (numbers[stated[1]], int(stated[2])) == (len(took), total)
    assert abs(sum(took) - total) <= len(took)  # each script's whole seconds, rounded down

"""Mean ± sd over seeds of every run in a folder of `NAME-SEED` runs, each evaluated into NAME-SEED/evaluate/.

    python docs/summarise_grid.py runs/grid            # a markdown table: model's number, its baseline, each seed

Made for docs/gpu/run_gpu.sh, whose runs are named so. The number is a run's
test error (semi-supervised) or test cluster error (clustering); the baseline is the one `main.py evaluate`
measured beside it (the network on the labels alone, or k-means on the pixels).
"""

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

# what a run is judged by: the categorical models' error, or the plain AAE's three figures (docs/metrics.md)
NUMBERS = {"test_error": 100, "test_cluster_error": 100, "test_cluster_error_exemplar": 100, "knn_accuracy": 1, "recon_bce": 1, "parzen_ll": 1}
BASELINES = ("labels_alone_error", "kmeans_pixels_error")


def spread(values, scale=100):
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    places = 1 if scale == 100 or abs(mean) > 10 else 3
    unit = " %" if scale == 100 else ""
    return f"{scale * mean:.{places}f} ± {scale * sd:.{places}f}{unit}"


def each(values, scale=100):
    return ", ".join(f"{scale * v:.{1 if scale == 100 or abs(v) > 10 else 3}f}" for v in values)


def table(folder):
    runs = defaultdict(dict)  # name -> {seed: metrics}
    for path in sorted(Path(folder).glob("*/evaluate/metrics.json")):
        name, _, seed = path.parent.parent.name.rpartition("-")
        runs[name][int(seed)] = json.loads(path.read_text())
    lines = ["| run | epochs | seeds | ours | each seed | baseline | each seed |", "|---|---|---|---|---|---|---|"]
    for name, seeds in runs.items():
        first = next(iter(seeds.values()))
        values = lambda key: [seeds[s][key] for s in sorted(seeds)]  # noqa: E731
        numbers = [k for k in NUMBERS if k in first and (k != "knn_accuracy" or "recon_bce" in first)]
        ours = "; ".join(f"{k}: {spread(values(k), NUMBERS[k])}" for k in numbers)
        ours_each = "; ".join(each(values(k), NUMBERS[k]) for k in numbers)
        row = f"| {name} | {first['epochs']} | {len(seeds)} | {ours} | {ours_each} |"
        baseline = next((k for k in BASELINES if k in first), None)
        row += f" {baseline}: {spread(values(baseline))} | {each(values(baseline))} |" if baseline else " | |"
        lines.append(row)
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(sys.argv[1] if len(sys.argv) > 1 else "runs/grid"))

"""Tables of the README's model runs (docs/readme_runs.sh models): mean ± sd over seeds, and each seed's figure.

    python docs/summarise_runs.py runs/models      # markdown, for README.md and docs/experiments.md

The baseline column reads each run's `evaluate/metrics.json` (`bash docs/readme_runs.sh baselines`).

It also copies seed 0's picture of each model to assets/readme/models/NAME.png, which the table links.
"""

import json
import shutil
import statistics
import sys
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "readme" / "models"
PICTURES = {"semi100": "semi_supervised_styles.png", "semi1000": "semi_supervised_styles.png",
            "cluster16": "clustering_clusters.png", "supervised": "supervised_styles.png",
            "dimred": "dim_reduction_codes.png", "mixture": "latent_codes.png", "swiss": "latent_codes.png"}
BASELINES = {"cluster16": ("kmeans_pixels_error", "k-means on pixels"), "semi100": ("labels_alone_error", "labels alone"),
             "semi1000": ("labels_alone_error", "labels alone"), "dimred": ("labels_alone_error", "labels alone")}
# run name: (what it is, the number it is judged by, how to show it, the paper's figure on full MNIST)
RUNS = {
    "semi100": ("semi-supervised, 100 labels (§5)", "test_error", "test error", "1.90 ± 0.10 %"),
    "semi1000": ("semi-supervised, 1000 labels (§5)", "test_error", "test error", "1.60 ± 0.08 %"),
    "cluster16": ("clustering, 16 clusters (§6)", "test_cluster_error", "test error", "9.55 ± 2.05 %"),
    "supervised": ("supervised, 2-D style (§4)", "knn_accuracy", "class found from the style by 5-NN (10 %: none)",
                   "a picture (Fig. 7)"),
    "dimred": ("dimensionality reduction, 2-D, 1000 labels (§7)", "test_error", "test error", "a picture (§7)"),
    "mixture": ("label discriminator, 10-Gaussian mixture (§2.3)", "label_part_accuracy",
                "test codes in their class's component", "a picture (Figs. 3-4)"),
    "swiss": ("label discriminator, swiss roll (§2.3)", "label_part_accuracy", "test codes on their class's segment",
              "a picture (Figs. 3-4)"),
}


def baseline(name, seeds):
    """'k-means on pixels 31.9 ± 1.3 % (each seed)' from the runs' evaluations, or '—'."""
    if name not in BASELINES:
        return "—"
    key, what = BASELINES[name]
    found = [p / "evaluate" / "metrics.json" for p in seeds]
    values = [100 * json.loads(f.read_text())[key] for f in found if f.exists()]
    if len(values) != len(seeds):
        return "—"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{what}: {statistics.mean(values):.1f} ± {sd:.1f} % ({', '.join(f'{v:.1f}' for v in values)})"


def main(folder):
    folder = Path(folder)
    rows = ["| model | ours: mean ± sd over the seeds | each seed | its baseline, same seeds | the paper's | picture |",
            "|---|---|---|---|---|---|"]
    ASSETS.mkdir(parents=True, exist_ok=True)
    for name, (what, key, meaning, paper) in RUNS.items():
        seeds = sorted((p for p in folder.glob(f"{name}-*") if (p / "mode_metrics.json").exists()),
                       key=lambda p: int(p.name.rsplit("-", 1)[1]))  # finished runs only
        values = [100 * json.loads((p / "mode_metrics.json").read_text())[key] for p in seeds]
        if not values:
            continue
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        each = ", ".join(f"{v:.1f}" for v in values)
        shutil.copy(seeds[0] / PICTURES[name], ASSETS / f"{name}.png")
        link = f"[{PICTURES[name].removesuffix('.png')}](assets/readme/models/{name}.png)"
        rows.append(f"| {what} | {meaning}: **{statistics.mean(values):.1f} ± {sd:.1f} %** | {each} | "
                    f"{baseline(name, seeds)} | {paper} | {link} |")
    print("\n".join(rows))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/models")

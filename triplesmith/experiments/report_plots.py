"""The report's PNG plots, drawn with matplotlib's object API (`Figure`, Agg canvas): no display
and no global pyplot state."""

import math
from pathlib import Path

from matplotlib.figure import Figure

from triplesmith.evaluators.format_validity import TAG_PREFIX
from triplesmith.experiments.report_names import Comparison, chain_names

SCORE_PLOT_METRICS = 4


def _score_plot(result: Comparison, path: Path) -> bool:
    metrics = [m for m in result.metrics if not m.endswith(("_precision", "_recall"))]
    metrics = metrics[:SCORE_PLOT_METRICS]
    if not metrics:
        return False
    figure = Figure(figsize=(4.2 * len(metrics), 0.5 * len(result.chains) + 2.5), layout="tight")
    names = chain_names(result)
    scores = result.per_example
    for i, metric in enumerate(metrics):
        axes = figure.add_subplot(1, len(metrics), i + 1)
        data = [
            scores[(scores["chain"] == c) & (scores["metric"] == metric)]["score"].dropna()
            for c in result.chains
        ]
        axes.boxplot(
            [list(d) or [math.nan] for d in data], orientation="horizontal", showmeans=True
        )
        axes.set_yticks(
            range(1, len(result.chains) + 1), names if i == 0 else [""] * len(result.chains)
        )
        axes.set_xlim(-0.05, 1.05)
        axes.set_title(metric)
    figure.suptitle("Per-example scores by chain")
    figure.savefig(path, dpi=120)
    return True


def _tag_plot(result: Comparison, path: Path) -> bool:
    if not result.tags:
        return False
    figure = Figure(figsize=(8, 0.45 * len(result.tags) * max(1, len(result.chains) / 2) + 1.5))
    axes = figure.add_subplot(1, 1, 1)
    height = 0.8 / len(result.chains)
    for i, (chain, name) in enumerate(zip(result.chains, chain_names(result), strict=True)):
        rates = [100 * result.table.loc[chain, f"{TAG_PREFIX}{t}"] for t in result.tags]
        positions = [j + i * height for j in range(len(result.tags))]
        axes.barh(positions, rates, height=height, label=name)
    axes.set_yticks([j + 0.4 - height / 2 for j in range(len(result.tags))], result.tags)
    axes.invert_yaxis()
    axes.set_xlabel("examples with the tag (%)")
    axes.set_title("Failure tags by chain")
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return True


def _quality_plot(result: Comparison, path: Path) -> bool:
    metric = result.primary_metric
    if metric is None:
        return False
    table = result.table
    costs = table["cost_usd"]
    use_cost = bool(costs.notna().all() and (costs > 0).any())
    x_cost = costs if use_cost else table["tokens_in"] + table["tokens_out"]
    panels = [
        ("mean latency per example (s)", table["latency_s"]),
        ("estimated cost of the run (USD)" if use_cost else "tokens per example", x_cost),
    ]
    figure = Figure(figsize=(11, 4.2), layout="tight")
    for i, (label, xs) in enumerate(panels):
        axes = figure.add_subplot(1, 2, i + 1)
        means = table[metric]
        errors = [means - table[f"{metric}_low"], table[f"{metric}_high"] - means]
        axes.errorbar(xs, means, yerr=errors, fmt="o", capsize=4)
        for name, x, y in zip(chain_names(result), xs, means, strict=True):
            axes.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        axes.set_xlabel(label)
        axes.set_ylabel(f"{metric} (mean, 95 % CI)")
        axes.set_ylim(-0.02, 1.02)
    figure.suptitle(f"Quality against speed and cost ({metric})")
    figure.savefig(path, dpi=120)
    return True


def write_plots(result: Comparison, out_dir: Path) -> dict[str, str]:
    """Write the plots that apply; returns {title: file name}."""
    plots = {}
    for title, name, draw in (
        ("Score distribution per chain", "scores.png", _score_plot),
        ("Failure tags per chain", "tags.png", _tag_plot),
        ("Quality against latency and cost", "quality.png", _quality_plot),
    ):
        if draw(result, out_dir / name):
            plots[title] = name
    return plots

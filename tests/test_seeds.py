"""The mean of several training seeds: per-example means, corpus means with their spread, paired
against the baseline like any chain (issue 20: the verdict uses the mean of the seeds)."""

import math
import statistics
from pathlib import Path

from test_experiments import EXAMPLES, WRONG, OracleChatModel, gold_answer

from triplesmith.chains.registry import register_chat_model
from triplesmith.experiments.compare import build_comparison, compare
from triplesmith.experiments.seeds import add_spread, mean_of_seeds


def test_the_mean_of_seeds_is_a_chain_with_mean_scores_and_their_spread(tmp_path: Path) -> None:
    # Seed a answers every sentence right; seed b the first half only; the baseline none.
    register_chat_model(
        "seed-a", OracleChatModel(answers={e.sentence: gold_answer(e) for e in EXAMPLES})
    )
    register_chat_model(
        "seed-b",
        OracleChatModel(
            answers={e.sentence: gold_answer(e) if i < 3 else WRONG for i, e in enumerate(EXAMPLES)}
        ),
    )
    register_chat_model("seed-base", OracleChatModel(answers={e.sentence: WRONG for e in EXAMPLES}))
    chains = ["zero-shot:seed-base", "zero-shot:seed-a", "zero-shot:seed-b"]
    comparison = compare(chains, EXAMPLES, "triple-f1,format,carb", store=tmp_path / "s.sqlite")
    a, b = comparison.experiments[1:]
    mean = mean_of_seeds([a, b], "fine-tuned (mean of 2 seeds)")
    assert mean.scores("triple_f1") == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5]
    corpus = {f.key: f.score for f in mean.summary}
    for key in ("carb_f1", "triple_micro_f1"):
        values = [next(f.score for f in x.summary if f.key == key) for x in (a, b)]
        assert math.isclose(corpus[key], sum(values) / 2)

    extended = build_comparison([*comparison.experiments, mean], "examples", None, 0)
    label = extended.chains[-1]
    add_spread(extended, label, extended.chains[1:3])
    table = extended.table
    assert math.isclose(table.loc[label, "triple_f1"], 0.75)
    assert math.isclose(
        table.loc[label, "carb_f1_sd"],
        statistics.stdev([table.loc[c, "carb_f1"] for c in extended.chains[1:3]]),
    )
    assert math.isclose(table.loc[label, "tag:hallucination"], (0.0 + 0.5) / 2)
    paired = extended.paired.set_index(["chain", "metric"])
    assert paired.loc[(label, "triple_f1"), "mean_difference"] == 0.75  # against the baseline

    # The report and the verdict show the mean with its spread across the seeds.
    from triplesmith.experiments.report import render_markdown
    from triplesmith.verdict import verdict_lines

    report = render_markdown(extended)
    spread = f"{table.loc[label, 'carb_f1']:.3f} ± {table.loc[label, 'carb_f1_sd']:.3f}"
    assert "standard deviation of the seeds' figures" in report
    assert next(
        line for line in report.splitlines() if "mean of 2 seeds" in line and spread in line
    )
    verdict = "\n".join(verdict_lines(extended, extended.chains[0], label, whole_carb_test=True))
    assert (
        f"| CaRB F1 (corpus) | {table.loc[extended.chains[0], 'carb_f1']:.3f} | {spread} |"
        in verdict
    )
    assert f"(CaRB F1 {spread}, " in verdict
    # A single chain has no spread: no ± anywhere in its lines.
    single = "\n".join(verdict_lines(comparison, comparison.chains[0], comparison.chains[1], True))
    assert "±" not in single

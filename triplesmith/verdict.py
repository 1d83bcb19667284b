"""The study's answer to "prompt or fine-tune?": the fine-tuned chain against the few-shot base,
paired on the same sentences, and where it stands against the study's targets.

The targets: more than the reference workflow's +29 % relative gain over few-shot (its judge
score went from 38 % to 49 %) on triple F1 and on CaRB F1, with a paired Wilcoxon p < 0.05; a
`format_error` rate below 2 %; and, on the whole CaRB test set, the classic OpenIE-4 system
(CaRB F1 0.488, AUC 0.272: the CaRB paper's row, which `tests/test_carb_scorer.py` reproduces).
"""

import math
from typing import Any

from triplesmith.experiments.compare import paired_tests
from triplesmith.experiments.report import chain_names
from triplesmith.experiments.report_tables import chain_spread, has_spread

REFERENCE_GAIN = 0.29
FORMAT_ERROR_TARGET = 0.02
OPENIE4 = {"carb_f1": 0.488, "carb_auc": 0.272}
# (key in the comparison, what the report calls it, paired per sentence?)
ROWS = [
    ("triple_f1", "triple F1 (per sentence)", True),
    ("carb_example_f1", "CaRB F1 (per sentence)", True),
    ("benchie_example_f1", "BenchIE F1 (per sentence)", True),
    ("format", "format valid", True),
    ("carb_f1", "CaRB F1 (corpus)", False),
    ("carb_auc", "CaRB AUC (corpus)", False),
    ("benchie_f1", "BenchIE F1 (corpus)", False),
]
SEEDS_NOTE = " A mean over training seeds shows ± the standard deviation across the seeds."
TARGET_METRICS = {"triple_f1": "triple F1", "carb_example_f1": "CaRB F1"}


def _value(table: Any, chain: str, key: str) -> float | None:
    if key not in table.columns:
        return None
    value = table.loc[chain, key]
    return None if value is None or math.isnan(float(value)) else float(value)


def _relative(before: float | None, after: float | None) -> float | None:
    if before is None or after is None or before <= 0:
        return None
    return after / before - 1


def _show_relative(gain: float | None) -> str:
    if gain is None:
        return "n/a"
    return f"×{gain + 1:.1f}" if gain >= 1 else f"{gain * 100:+.0f} %"


def _p(value: float) -> str:
    return f"{value:.0e}" if value < 1e-3 else f"{value:.3f}"


def verdict_lines(
    comparison: Any, few_shot: str, fine_tuned: str, whole_carb_test: bool
) -> list[str]:
    """Markdown: the fine-tuned chain against the few-shot one, and the targets, plainly.

    Chains are named readably (`chain_names`), never by spec: a spec may hold the machine's
    folders. Pass the lines joined by newlines to `write_report(..., verdict=...)`.
    """
    table = comparison.table
    experiments = dict(zip(comparison.chains, comparison.experiments, strict=True))
    per_sentence_metrics = [k for k, _, paired in ROWS if paired and k in comparison.metrics]
    tests = {
        key: test.model_dump()
        for key, test in paired_tests(
            experiments[few_shot], experiments[fine_tuned], per_sentence_metrics
        ).items()
    }
    names = dict(zip(comparison.chains, chain_names(comparison), strict=True))
    lines = [
        "## Prompt or fine-tune? The fine-tuned chain against few-shot",
        "",
        f"**{names[fine_tuned]}** against **{names[few_shot]}** on the same sentences: paired "
        "Wilcoxon signed-rank test and bootstrap 95 % CI of the mean difference for per-sentence "
        "scores; corpus-level figures have no CI." + (SEEDS_NOTE if has_spread(comparison) else ""),
        "",
        "| metric | few-shot | fine-tuned | difference [95 % CI] | p | relative | n |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for key, name, per_sentence in ROWS:
        before, after = _value(table, few_shot, key), _value(table, fine_tuned, key)
        if before is None or after is None:
            continue
        test = tests.get(key) if per_sentence else None
        if test is not None:
            difference = f"{test['mean_difference']:+.3f} [{test['low']:+.3f}, {test['high']:+.3f}]"
            p, n = _p(test["p_value"]), str(int(test["n"]))
        else:
            difference, p, n = "", "", ""
        gain = _show_relative(_relative(before, after))
        after_text = f"{after:.3f}{chain_spread(table, fine_tuned, key)}"
        lines.append(
            f"| {name} | {before:.3f} | {after_text} | {difference} | {p} | {gain} | {n} |"
        )
    lines += ["", "Against the targets:", ""]
    for key, name in TARGET_METRICS.items():
        test = tests.get(key)
        gain = _relative(_value(table, few_shot, key), _value(table, fine_tuned, key))
        if test is None or gain is None:
            lines.append(f"- more than +29 % relative on {name}: not measurable here (no scores)")
            continue
        met = gain > REFERENCE_GAIN and test["p_value"] < 0.05
        lines.append(
            f"- more than +29 % relative on {name}, p < 0.05: **{'met' if met else 'not met'}** "
            f"({_show_relative(gain)}, p = {_p(test['p_value'])})"
        )
    rate = _value(table, fine_tuned, "tag:format_error")
    if rate is not None:
        count = round(rate * int(table.loc[fine_tuned, "n"]))
        met = rate < FORMAT_ERROR_TARGET
        lines.append(
            f"- fine-tuned `format_error` below 2 %: **{'met' if met else 'not met'}** "
            f"({rate * 100:.1f} %, {count} of {int(table.loc[fine_tuned, 'n'])})"
        )
    if whole_carb_test:
        f1, auc = _value(table, fine_tuned, "carb_f1"), _value(table, fine_tuned, "carb_auc")
        if f1 is not None and auc is not None:
            above = [f1 > OPENIE4["carb_f1"], auc > OPENIE4["carb_auc"]]
            status = {
                (True, True): "beaten",
                (True, False): "beaten on F1, not on AUC",
                (False, True): "beaten on AUC, not on F1",
                (False, False): "not reached",
            }[tuple(above)]  # type: ignore[index]
            lines.append(
                f"- against OpenIE-4 on CaRB test (F1 {OPENIE4['carb_f1']}, AUC "
                f"{OPENIE4['carb_auc']}): **{status}** "
                f"(CaRB F1 {f1:.3f}{chain_spread(table, fine_tuned, 'carb_f1')}, "
                f"{f1 / OPENIE4['carb_f1'] * 100:.0f} % of OpenIE-4's; AUC "
                f"{auc:.3f}{chain_spread(table, fine_tuned, 'carb_auc')}, "
                f"{auc / OPENIE4['carb_auc'] * 100:.0f} %)"
            )
    return [*lines, ""]

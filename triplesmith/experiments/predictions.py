"""An experiment's answers as CaRB `tabbed` predictions, so anyone can re-score them with CaRB's
own scorer (`python carb.py --gold=data/gold/test.tsv --tabbed=FILE`)."""

from pathlib import Path

from triplesmith.evaluators.base import run_error
from triplesmith.evaluators.carb_formats import write_tabbed
from triplesmith.evaluators.exact import scored_triples
from triplesmith.experiments.result import ExperimentResult


def write_carb_predictions(experiment: ExperimentResult, path: str | Path) -> int:
    """Write the experiment's finished answers (subject and object as CaRB's arg1 and arg2, the
    chain's confidence, 1.0 when it gives none) to `path`; failed examples have no line.
    Returns the number of extractions written."""
    rows = [row for row in experiment.rows if run_error(row.outputs) is None]
    return write_tabbed(
        path,
        (
            (
                row.example.sentence,
                [(t.relation, (t.s, t.object), c) for t, c in scored_triples(row.outputs)],
            )
            for row in rows
        ),
    )

"""Benchmark runs over datasets, their summaries, BR-BP and metric-vs-K plots, and the Markdown report."""

from .report import br_bp_area, plot_curves, summarize, write_report, write_summary_csv
from .runner import (
    PAIR_FIELDS,
    EvaluationPlan,
    Setting,
    parse_counts,
    parse_method_spec,
    read_pairs,
    run_evaluation,
)

__all__ = [
    "PAIR_FIELDS",
    "EvaluationPlan",
    "Setting",
    "br_bp_area",
    "parse_counts",
    "parse_method_spec",
    "plot_curves",
    "read_pairs",
    "run_evaluation",
    "summarize",
    "write_report",
    "write_summary_csv",
]

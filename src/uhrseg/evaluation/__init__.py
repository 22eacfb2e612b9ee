"""Benchmark runs over datasets: superpixels (summaries, BR-BP and metric-vs-K plots, report) and semantic
segmentation (confusion matrices per image, mIoU and speed per model, per-class plot, examples, report)."""

from .report import at_matched_k, br_bp_area, plot_curves, summarize, write_report, write_summary_csv
from .runner import (
    PAIR_FIELDS,
    EvaluationPlan,
    Setting,
    parse_counts,
    parse_method_spec,
    read_pairs,
    run_evaluation,
)
from .semantic import (
    SEMANTIC_FIELDS,
    ModelSpec,
    SemanticPlan,
    parse_model_specs,
    run_semantic_evaluation,
    summarize_semantic,
    write_examples,
    write_semantic_report,
)

__all__ = [
    "PAIR_FIELDS",
    "SEMANTIC_FIELDS",
    "ModelSpec",
    "SemanticPlan",
    "parse_model_specs",
    "run_semantic_evaluation",
    "summarize_semantic",
    "write_examples",
    "write_semantic_report",
    "EvaluationPlan",
    "Setting",
    "at_matched_k",
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

"""Evaluation reports (ROS-free): success rate with binomial standard error, latency summaries, plots."""

from dm1.evaluation.report import EvalSummary, binomial_stderr, summarize, write_report

__all__ = ["EvalSummary", "binomial_stderr", "summarize", "write_report"]

"""Scorers as plain functions and LangSmith custom evaluators."""

"""Placeholder until the evaluator lands (being written in this change)."""

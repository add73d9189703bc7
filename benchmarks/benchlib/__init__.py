"""Helpers for the scripts in benchmarks/ (process plumbing, targets, runner, report)."""

"""Figures and summary pages drawn from latency tables."""

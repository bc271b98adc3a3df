"""Batch jobs: each an idempotent function of a data interval returning a small typed result."""

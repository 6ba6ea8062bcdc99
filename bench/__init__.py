"""Benchmark harness behind `make bench` (see README.md)."""

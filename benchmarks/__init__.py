"""Benchmarks run by `make bench`; each prints its figures as `name: value` lines."""

"""Benchmarks: ``make bench`` (``python -m bench``). Every figure is printed next to a baseline
measured in the same run, as a ratio; results go to ``bench/results.json``."""

"""Measuring artifacts side by side: which rows to measure (bench_plan), how (benchmark, footprint for size and
memory), and what is written (report, plots, headline). Imports engines and runtimes, never a stage or the
pipeline: the bench stage (deploykit/stages/bench.py) calls in here.
"""

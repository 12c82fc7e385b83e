"""Benchmark harness: mock upstream, floor proxy, load generator, transport comparison, runner.

Run everything with ``python -m benchmarks.run``; see ``benchmarks/README.md``.
"""

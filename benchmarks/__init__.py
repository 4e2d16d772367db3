"""Benchmarks of the sweep service: ``python -m benchmarks [--quick] [--only NAME ...]``.

Each benchmark measures two things side by side in one run and reports their ratio, because
absolute times on shared machines drift. See each function's docstring in
:mod:`benchmarks.suite` for exactly what it compares.
"""

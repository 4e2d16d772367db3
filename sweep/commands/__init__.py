"""The commands of ``sweep`` (:mod:`sweep.cli`), one module each, thin over the core."""

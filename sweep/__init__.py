"""Hyperparameter sweeps of Keras CNNs on Optuna: one command, many workers, a dashboard that
compares every trial with the baseline. The command is ``sweep`` (:mod:`sweep.commands`)."""

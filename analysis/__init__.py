"""Scaling-law analysis: fits that tell a stretched exponential from a power law, plots, reports.

Modules: ``load`` (tables, groups, seeds), ``forms`` (the model forms), ``fit`` (global robust
fits), ``bootstrap`` (replicates), ``verdict`` (the test of gamma > 0), ``analyse`` (one group, all
of it), ``joint`` (L(N, D)), ``tables``, ``plots``, ``report``, ``wandb_log`` and ``cli``.
"""

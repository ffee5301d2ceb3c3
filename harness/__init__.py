"""polyscale's engine: moment compression, tasks, models, training, experiments, sweeps, tracking."""

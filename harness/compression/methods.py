"""The names of the compression methods (``harness.compression.compress``), in a module without
its dependencies: the command line lists them before it imports torch."""

METHODS = ("clustered", "global", "random", "kmeans")

"""The names of the compression methods (``harness.compression.compress``), of the clustered
method's group widths (``partition.nearest_groups``) and of its final-phase drop schedules
(``clustered._pick_groups``), in a module without dependencies: the command line and the
configuration schema list them before anything imports torch or scipy."""

METHODS = ("clustered", "global", "random", "kmeans")
GROUP_WIDTHS = ("bound", "radius", "box")
FINAL_DROPS = ("taper", "scaled")

"""The names of the compression methods (``harness.compression.compress``), of the clustered
method's group widths (``partition.nearest_groups``) and of its final-phase drop schedules
(``clustered._pick_groups``), in a module without dependencies: the command line and the
configuration schema list them before anything imports torch or scipy; and the one check of a
value against such a list."""

METHODS = ("clustered", "global", "random", "kmeans")
GROUP_WIDTHS = ("bound", "radius", "box")
FINAL_DROPS = ("auto", "balanced", "taper", "scaled", "balanced_below_8")
# What a config's null final_drops means: the default when its runs were made (config/schema.py).
NULL_FINAL_DROPS = "balanced_below_8"


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise ValueError naming ``name``, the choices and ``value`` unless ``value`` is one of them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")

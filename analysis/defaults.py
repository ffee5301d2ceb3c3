"""Defaults of the analysis that its command line shows, in a module without numpy, scipy or
pandas, so that building the parsers imports none of them."""

# The level of the test of gamma > 0; analysis.verdict explains the choice.
LEVEL = 0.025

"""ekc: a region's unified contact center as code."""

__version__ = "0.1.0"

"""namegen: a deep character-level MLP that makes names, and shows why deep nets fail to train."""

__version__ = "0.1.0"

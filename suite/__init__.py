"""bpsuite: a benchmark and reproducibility suite for alternatives to backpropagation in CNNs."""

__version__ = "0.1.0"

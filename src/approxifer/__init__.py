"""ApproxIFER: Berrut-coded, straggler- and Byzantine-resilient prediction serving for any model."""

__version__ = "0.1.0"

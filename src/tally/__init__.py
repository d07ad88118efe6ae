"""Tally: a self-hostable loyalty and rewards platform for online stores."""

__version__ = "0.1.0"

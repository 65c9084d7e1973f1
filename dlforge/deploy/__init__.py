"""Handing engines to serving systems: ``dlforge deploy triton`` and ``dlforge deploy validate``."""

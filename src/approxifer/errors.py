"""The error every parameter check raises (re-exported by `experiments`, the engine that introduced it)."""

from __future__ import annotations

__all__ = ["ParameterError"]


class ParameterError(ValueError):
    """An experiment (or a serving run) was asked for with parameters that cannot work."""

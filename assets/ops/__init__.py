"""Operations: forecast deviations and the cases they open."""

from assets.ops.deviations import deviations

ops_assets = [deviations]

__all__ = ["ops_assets"]

"""ipywidgets panels over the workbench (need the `notebooks` extra): `RoutingExplorer`,
`DeltaNetExplorer`. Each is a thin view over a controller object that tests drive directly."""
from __future__ import annotations

__all__ = ["RoutingExplorer", "DeltaNetExplorer", "PlannerPanel"]


def __getattr__(name):
    if name == "RoutingExplorer":
        from .routing import RoutingExplorer
        return RoutingExplorer
    if name == "DeltaNetExplorer":
        from .deltanet import DeltaNetExplorer
        return DeltaNetExplorer
    if name == "PlannerPanel":
        from .planner import PlannerPanel
        return PlannerPanel
    raise AttributeError(name)

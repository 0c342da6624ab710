"""ipywidgets panels over the workbench (need the `notebooks` extra): `ChatPanel`, `RoutingExplorer`,
`DeltaNetExplorer`, `PlannerPanel`, `TokensPerSecondMeter` / `StreamingMeter`, `SpeedDashboard`,
`QuantizationExplorer`.
Each is a thin view over a controller object or a function that tests drive directly."""
from __future__ import annotations

__all__ = ["ChatPanel", "RoutingExplorer", "DeltaNetExplorer", "PlannerPanel", "TokensPerSecondMeter", "StreamingMeter",
           "SpeedDashboard", "QuantizationExplorer"]


def __getattr__(name):
    if name == "RoutingExplorer":
        from .routing import RoutingExplorer
        return RoutingExplorer
    if name == "DeltaNetExplorer":
        from .deltanet import DeltaNetExplorer
        return DeltaNetExplorer
    if name in ("TokensPerSecondMeter", "StreamingMeter", "SpeedDashboard"):
        from . import speed
        return getattr(speed, name)
    if name == "ChatPanel":
        from .chat import ChatPanel
        return ChatPanel
    if name == "QuantizationExplorer":
        from .quantization import QuantizationExplorer
        return QuantizationExplorer
    if name == "PlannerPanel":
        from .planner import PlannerPanel
        return PlannerPanel
    raise AttributeError(name)

"""The LangGraph state machine: routing, fan-out comparison, self-repair, triage, scoring."""

from triplesmith.graph.build import build_graph, get_graph

__all__ = ["build_graph", "get_graph"]

"""`build_graph()`: the extraction state machine, compiled; `graph` is what `langgraph dev` serves."""

from functools import lru_cache
from typing import Any

from langgraph.graph import END, START, StateGraph

from triplesmith.graph import nodes
from triplesmith.graph.state import (
    BranchOutput,
    BranchState,
    ExtractorInput,
    ExtractorOutput,
    ExtractorState,
)
from triplesmith.run_config import RunContext


def build_branch() -> Any:
    """One chain's run: extract → parse → triage → (repair → parse → triage)* → score."""
    branch = StateGraph(BranchState, output_schema=BranchOutput)
    branch.add_node("extract", nodes.extract)
    branch.add_node("parse", nodes.parse)
    branch.add_node("triage", nodes.triage_node)
    branch.add_node("repair", nodes.repair)
    branch.add_node("score", nodes.score)
    branch.add_edge(START, "extract")
    branch.add_edge("extract", "parse")
    branch.add_edge("parse", "triage")
    branch.add_conditional_edges("triage", nodes.needs_repair, ["repair", "score"])
    branch.add_edge("repair", "parse")
    branch.add_edge("score", END)
    return branch.compile()


def build_graph() -> Any:
    """START → validate → route (Send, one branch per chain) → run_chain → END."""
    graph = StateGraph(
        ExtractorState,
        context_schema=RunContext,
        input_schema=ExtractorInput,
        output_schema=ExtractorOutput,
    )
    graph.add_node("validate", nodes.validate)
    graph.add_node("run_chain", build_branch())
    graph.add_edge(START, "validate")
    graph.add_conditional_edges("validate", nodes.route, ["run_chain"])
    graph.add_edge("run_chain", END)
    return graph.compile(name="extractor")


@lru_cache(maxsize=1)
def get_graph() -> Any:
    """The compiled graph, built once per process."""
    return build_graph()

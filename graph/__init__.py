"""LangGraph state machine: state, nodes and build_graph()."""

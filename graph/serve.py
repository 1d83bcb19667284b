"""The compiled graph `langgraph dev` serves (langgraph.json: `extractor`)."""

from triplesmith.graph.build import get_graph

graph = get_graph()

"""Per-sentence overhead of the graph over calling the chain directly, with a fake chat model.

Usage: python benchmarks/bench_graph_overhead.py [--n 200]
Prints the mean time per sentence both ways and, as its last line, the overhead in ms
(target: < 5 ms). Scoring is off (no gold) so the figure is the graph's own cost:
validate, Send fan-out, parse, triage, state merging.
"""

import argparse
import json
import time

from langchain_core.language_models.fake_chat_models import FakeListChatModel

from triplesmith.chains.registry import get_chain, register_chat_model
from triplesmith.data.registry import load_dataset
from triplesmith.graph import build_graph


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    sentences = [e.sentence for e in load_dataset("sample")]
    answers = [
        json.dumps([{"s": s.split()[0], "relation": "is", "object": s.split()[1]}])
        for s in sentences
    ]
    register_chat_model("bench", FakeListChatModel(responses=answers))
    spec = "zero-shot:bench"
    chain, graph = get_chain(spec), build_graph()
    config = {"configurable": {"chain": spec}}
    items = [sentences[i % len(sentences)] for i in range(args.n)]
    for sentence in items[:10]:  # warm up both paths
        chain.invoke({"sentence": sentence})
        graph.invoke({"sentence": sentence}, config=config)

    start = time.perf_counter()
    for sentence in items:
        chain.invoke({"sentence": sentence})
    direct = (time.perf_counter() - start) / len(items)
    start = time.perf_counter()
    for sentence in items:
        graph.invoke({"sentence": sentence}, config=config)
    through_graph = (time.perf_counter() - start) / len(items)

    print(f"sentences: {len(items)}")
    print(f"chain directly: {direct * 1000:.2f} ms/sentence")
    print(f"through the graph: {through_graph * 1000:.2f} ms/sentence")
    print(f"graph overhead: {(through_graph - direct) * 1000:.2f} ms/sentence (target < 5 ms)")


if __name__ == "__main__":
    main()

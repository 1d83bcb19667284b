"""The local-model chains with the real embedded SmolLM2 (slow: they generate)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from triplesmith.chains.registry import get_chain

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def transformers_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """These chains run on the transformers engine (tests/test_engine_onnx.py has the other)."""
    monkeypatch.setenv("TRIPLESMITH_ENGINE", "hf")


SENTENCES = [
    "Barack Obama was born in Hawaii.",
    "Paris is the capital of France.",
    "The Nile flows through Egypt and Sudan.",
]


def test_extract_cli_returns_json_triples_from_the_embedded_model() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "triplesmith.cli.app",
            "extract",
            SENTENCES[0],
            "--json",
            "--chain",
            "few-shot:smollm2+max_new_tokens=40",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    extraction = json.loads(out.stdout)
    assert extraction["chain"] == "few-shot:smollm2+max_new_tokens=40"
    assert extraction["model"] == "smollm2" and extraction["prompt_id"] == "kg-triples-v1"
    assert extraction["raw"] and extraction["tokens_out"] > 0 and extraction["tokens_in"] > 0
    # The base model does answer in the few-shot JSON format for this sentence.
    assert extraction["triples"], extraction["raw"]
    assert all(t["s"] in extraction["raw"] for t in extraction["triples"])
    assert len(extraction["confidences"]) == len(extraction["triples"])


def test_hf_chain_loads_a_peft_adapter_and_batches(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    from triplesmith.models import load

    model, _ = load("smollm2")
    config = LoraConfig(
        r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(model, config).save_pretrained(tmp_path / "adapter")

    chain = get_chain(f"hf:smollm2+adapter={tmp_path / 'adapter'}+max_new_tokens=12")
    out = chain.batch([{"sentence": s} for s in SENTENCES[:2]] + [{"sentence": ""}])
    assert [e.error is None for e in out] == [True, True, False]
    assert all(e.tokens_out > 0 and e.raw for e in out[:2])
    assert out[0].adapter_hash and len(out[0].adapter_hash) == 16
    assert chain.metadata()["adapter_hash"] == out[0].adapter_hash


def test_hf_chain_refuses_a_directory_that_is_not_an_adapter(tmp_path: Path) -> None:
    from triplesmith.errors import ChainError

    with pytest.raises(ChainError, match="not a PEFT adapter directory"):
        get_chain(f"hf:smollm2+adapter={tmp_path}")


def test_engine_log_probs_are_those_of_the_greedy_tokens() -> None:
    """The recorded per-token log-probs equal transformers' own transition scores."""
    from transformers import GenerationConfig

    from triplesmith.chains.engines import GenerationOptions, get_hf_engine

    engine = get_hf_engine("smollm2")
    prompts = [[{"role": "user", "content": f"Extract triples: {s}"}] for s in SENTENCES[:2]]
    # Unconstrained: the grammar's mask renormalises the log-probs over the allowed tokens.
    ours = engine.generate(prompts, [8, 8], GenerationOptions(max_new_tokens=10, constrained=False))
    enc = engine.tokenizer(
        [engine.render(p) for p in prompts],
        return_tensors="pt",
        padding=True,
        add_special_tokens=False,
    )
    config = GenerationConfig(
        max_new_tokens=10,
        do_sample=False,
        output_scores=True,
        return_dict_in_generate=True,
        pad_token_id=engine.tokenizer.pad_token_id,
    )
    out = engine.model.generate(**enc, generation_config=config)
    theirs = engine.model.compute_transition_scores(
        out.sequences, out.scores, normalize_logits=True
    )
    for generation, row in zip(ours, theirs.tolist(), strict=True):
        assert generation.tokens_out > 0
        assert generation.logprobs == pytest.approx(row[: generation.tokens_out], abs=1e-3)


def test_cancel_stops_a_generation_in_flight_and_resume_accepts_work_again() -> None:
    import threading
    import time

    from triplesmith.chains.engines import CANCELLED, GenerationOptions, HFEngine

    engine = HFEngine("smollm2")
    prompt = [{"role": "user", "content": "Write the numbers from 1 to 1000, comma separated."}]
    options = GenerationOptions(max_new_tokens=600, constrained=False)
    results: list = []
    worker = threading.Thread(
        target=lambda: results.extend(engine.generate([prompt], [20], options))
    )
    started = time.monotonic()
    worker.start()
    time.sleep(2.0)
    engine.cancel()
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert time.monotonic() - started < 10  # 600 tokens take far longer on 2 CPU cores
    assert len(results) == 1 and CANCELLED in str(results[0])
    assert CANCELLED in str(engine.generate([prompt], [20], options)[0])  # refused until resumed

    engine.resume()
    [again] = engine.generate(
        [prompt], [20], GenerationOptions(max_new_tokens=5, constrained=False)
    )
    assert again.tokens_out == 5


def test_concurrent_single_calls_are_coalesced_into_one_generate(caplog) -> None:  # noqa: ANN001
    import logging
    import time
    from concurrent.futures import ThreadPoolExecutor

    chain = get_chain("zero-shot:smollm2+max_new_tokens=4+constrained=false")

    def call(sentence: str):  # noqa: ANN202
        time.sleep(0.01 * len(sentence) % 0.03)  # workers start a few milliseconds apart
        return chain.invoke({"sentence": sentence})

    with caplog.at_level(logging.DEBUG, logger="triplesmith.chains.engines.base"):
        with ThreadPoolExecutor(6) as pool:
            outputs = list(pool.map(call, SENTENCES * 2))
    assert all(o.error is None and o.tokens_out == 4 for o in outputs)
    sizes = [r.args[0] for r in caplog.records if r.getMessage().startswith("generating for")]
    assert sizes == [6]


def generate_twice(sentences: list[str], first, second) -> list[tuple]:  # noqa: ANN001
    """The few-shot prompts of `sentences` generated by the real model with two sets of
    decoding options: (first, second) generation pairs, neither of them an error."""
    from triplesmith.chains.engines import get_hf_engine
    from triplesmith.chains.prompt import build_messages
    from triplesmith.data.registry import load_dataset

    engine = get_hf_engine("smollm2")
    shots = load_dataset("sample", split="train")[:3]
    prompts = [build_messages(s, shots) for s in sentences]
    lengths = [engine.count_tokens(s) for s in sentences]
    pairs = list(
        zip(
            engine.generate(prompts, lengths, first),
            engine.generate(prompts, lengths, second),
            strict=True,
        )
    )
    for a, b in pairs:
        assert not isinstance(a, Exception) and not isinstance(b, Exception)
    return pairs


def test_the_repeat_guard_only_cuts_a_real_loop_short() -> None:
    """With the real model, the guarded answer is the free answer up to its first repeated
    item, closed as strict JSON; an answer that never repeats is left exactly as it was."""
    from triplesmith.chains.engines import GenerationOptions
    from triplesmith.chains.parser import parse_triples
    from triplesmith.chains.repeat_guard import open_brackets, repeats_a_triple, repeats_an_item

    def repeats(text: str) -> bool:
        return repeats_a_triple(text) or repeats_an_item(text)

    # Sample test sentences on which the base model repeats a triple with this prompt.
    sentences = [
        *SENTENCES,
        "The bus to Kinsale leaves at 7:45.",
        "Ana Ruiz, a left-handed fencer from Valencia, has won the national title four times.",
    ]
    free = GenerationOptions(120, stop_repeats=False, close_loops=False, constrained=False)
    guarded = GenerationOptions(120, close_loops=False, constrained=False)
    pairs = generate_twice(sentences, free, guarded)
    looped = 0
    for f, g in pairs:
        if not any(repeats(f.text[: i + 1]) for i, char in enumerate(f.text) if char == "}"):
            assert g.text == f.text
            continue
        looped += 1
        # The guard wrote the free answer's tokens up to the repeated item's `}`, then closed
        # the brackets still open, and the answer is complete.
        cut = next(k for k in range(len(g.text), 0, -1) if f.text.startswith(g.text[:k]))
        assert g.text[cut:] == open_brackets(g.text[:cut])
        assert repeats(g.text[:cut])
        json.loads(g.text)  # strict JSON
        if repeats_a_triple(g.text[:cut]):
            assert parse_triples(g.text).diagnostics.complete, g.text
        assert g.tokens_out <= f.tokens_out
    assert looped, [f.text for f, _ in pairs]  # the base model does loop on some of these


def test_closing_looping_strings_changes_only_answers_that_loop() -> None:
    """With the real model, closing looping strings leaves every answer whose strings never loop
    exactly as it was; where it acts, the answer is the same up to a `"` the guard wrote."""
    from triplesmith.chains.engines import GenerationOptions

    sentences = [
        *SENTENCES,
        "He was buried in the Abbey of the Psalms mausoleum at the Hollywood Forever Cemetery.",
        "Company officials said the current robust domestic demand helped sharply higher profit.",
    ]
    off = GenerationOptions(160, close_loops=False, constrained=False)
    on = GenerationOptions(160, constrained=False)
    for a, b in generate_twice(sentences, off, on):
        if a.text == b.text:
            continue
        cut = next(i for i, (x, y) in enumerate(zip(a.pieces, b.pieces, strict=False)) if x != y)
        assert b.pieces[cut] == '"', (a.text, b.text)
        assert b.tokens_out <= a.tokens_out


def test_token_texts_are_the_reference_detokenizers() -> None:
    """The engine's fast incremental detokenizer gives the same piece for every token as
    `token_pieces` (multi-byte characters split across tokens included)."""
    from triplesmith.chains.engines import get_hf_engine
    from triplesmith.chains.engines.base import token_pieces

    engine = get_hf_engine("smollm2")
    tok = engine.tokenizer
    for text in ['[{"s": "Zoë", "relation": "drew", "object": "😀 faces"}]', "naïve café – 東京"]:
        ids = tok.encode(text, add_special_tokens=False) + [engine.eos_ids[0]]
        reference = token_pieces(lambda part: tok.decode(part, skip_special_tokens=True), ids)
        assert engine._pieces(ids) == reference
        assert "".join(reference) == tok.decode(ids, skip_special_tokens=True)


@pytest.mark.skipif("__import__('torch').cuda.is_available()", reason="the CPU engine's chunks")
def test_cpu_chunks_keep_the_kv_cache_under_its_cap() -> None:
    """On a CPU long prompts go in narrower chunks, each within CPU_CACHE_BYTES of KV cache
    (room for the guessing decoder's slots);
    short ones still fill `width`; every prompt is in one chunk, in the order given."""
    from triplesmith.chains.engines import get_hf_engine
    from triplesmith.chains.engines.hf import CPU_CACHE_BYTES
    from triplesmith.chains.engines.speculative import SLOTS_PER_TOKEN

    engine = get_hf_engine("smollm2")
    assert not engine.on_gpu
    per_token = engine.cache_bytes_per_token
    assert per_token == 30 * 2 * 3 * 64 * 4  # SmolLM2-135M: 30 layers, 3 KV heads of 64, fp32
    lengths = [40] * 16 + [620] * 20  # zero-shot-sized, then few-shot-sized prompts
    budgets = [96] * 16 + [150] * 20
    order = list(range(len(lengths)))
    chunks = engine.chunks(order, lengths, budgets, 16)
    assert [i for chunk in chunks for i in chunk] == order
    assert len(chunks[0]) == 16  # 16 x (40 + 2 x 96) tokens fit: the width decides
    for chunk in chunks:
        tokens = max(lengths[i] for i in chunk) + SLOTS_PER_TOKEN * max(budgets[i] for i in chunk)
        assert len(chunk) == 1 or len(chunk) * tokens * per_token <= CPU_CACHE_BYTES
    assert max(len(chunk) for chunk in chunks[1:]) < 16


def carb_test_sentences(carb_dir: Path, n: int) -> list[str]:
    """The first `n` sentences of CaRB's test gold."""
    from triplesmith.data.carb import read_carb_gold

    return [e.sentence for e in read_carb_gold(carb_dir / "gold" / "test.tsv", "test")][:n]


@pytest.mark.slow
@pytest.mark.parametrize("guessing", [False, True])
def test_finished_rows_leave_the_batch_without_changing_an_answer(
    carb_dir: Path, guessing: bool
) -> None:
    """With the real model on CaRB test sentences (grammar and loop rules on), a chunk whose
    finished rows leave the batch gives the answers, log-probs and endings of one run at full
    width, with transformers' dynamic KV cache, the CPU's preallocated one and the GPU's static
    one; decoding one token a call (`generate`) and checking guessed tokens."""
    from triplesmith.chains.engines import GenerationOptions, HFEngine
    from triplesmith.chains.prompt import build_messages

    sentences = carb_test_sentences(carb_dir, 8)
    engine = HFEngine("smollm2")
    engine.speculative = guessing
    prompts = [build_messages(s, []) for s in sentences]
    options = GenerationOptions(max_new_tokens=64, batch_size=len(prompts))

    def run(compact: bool, cache: str) -> tuple[list, list[int]]:
        engine.compact, engine.cpu_cache = compact, cache
        results = engine.generate(prompts, [20] * len(prompts), options)
        assert not [r for r in results if isinstance(r, Exception)]
        return results, engine.widths

    reference, widths = run(False, "dynamic")
    assert widths == [len(prompts)]
    for cache in ("dynamic", "static", "preallocated"):
        results, widths = run(True, cache)
        assert len(widths) > 1 and widths == sorted(widths, reverse=True), widths
        for ours, full in zip(results, reference, strict=True):
            assert ours.text == full.text
            assert ours.finish_reason == full.finish_reason
            assert ours.token_ids == full.token_ids
            assert ours.logprobs == pytest.approx(full.logprobs, abs=1e-4)
    assert {r.finish_reason for r in reference} >= {"stop"}  # some rows did finish early


@pytest.mark.slow
@pytest.mark.parametrize("guessing", [False, True])
def test_a_shared_prompt_prefix_runs_once_without_changing_an_answer(
    carb_dir: Path, guessing: bool
) -> None:
    """Few-shot prompts share their system prompt and examples: run once at one row (and kept
    for the next call), they give the answers and log-probs of the prompts run whole, with the
    dynamic, the preallocated and the static KV cache, decoding one token a call or checking
    guessed tokens."""
    from triplesmith.chains.engines import GenerationOptions, HFEngine
    from triplesmith.chains.prompt import build_messages
    from triplesmith.data.registry import load_dataset

    sentences = carb_test_sentences(carb_dir, 6)
    shots = load_dataset("sample", split="train")[:3]
    prompts = [build_messages(s, shots) for s in sentences]
    engine = HFEngine("smollm2")
    engine.speculative = guessing
    options = GenerationOptions(max_new_tokens=40, batch_size=len(prompts))

    engine.share_prefix = False
    reference = engine.generate(prompts, [20] * len(prompts), options)
    engine.share_prefix = True
    for cache in ("dynamic", "static", "preallocated"):
        engine.cpu_cache = cache
        results = engine.generate(prompts, [20] * len(prompts), options)
        for ours, whole in zip(results, reference, strict=True):
            assert ours.text == whole.text and ours.tokens_in == whole.tokens_in
            assert ours.logprobs == pytest.approx(whole.logprobs, abs=1e-4)
    shared = len(engine._prefix[0])  # the examples at least: hundreds of tokens
    assert shared > 300 and engine.prefix_reused == shared  # the second chunk reused it all
    [alone] = engine.generate(prompts[1:2], [20], options)  # one prompt: the kept prefix
    assert engine.prefix_reused == shared and alone.text == reference[1].text


@pytest.mark.slow
def test_checking_guessed_tokens_keeps_every_answer_in_fewer_calls(carb_dir: Path) -> None:
    """On a CPU greedy chunks check tokens guessed from the prompt and the answer several at a
    call (chains/engines/speculative.py): with the real model, grammar and loop rules on,
    zero-shot and few-shot prompts, the answers, endings and log-probs of decoding one token a
    call, in fewer model calls than the longest answer has tokens."""
    from triplesmith.chains.engines import GenerationOptions, HFEngine
    from triplesmith.chains.prompt import build_messages
    from triplesmith.data.registry import load_dataset

    sentences = carb_test_sentences(carb_dir, 8)
    shots = load_dataset("sample", split="train")[:3]
    engine = HFEngine("smollm2")
    assert engine._speculates(GenerationOptions())  # the CPU's default for greedy decoding
    assert not engine._speculates(GenerationOptions(temperature=0.7, seed=1))
    options = GenerationOptions(max_new_tokens=64, batch_size=len(sentences))
    for examples in ([], shots):
        prompts = [build_messages(s, examples) for s in sentences]
        runs = {}
        for guessing in (False, True):
            engine.speculative = guessing
            runs[guessing] = engine.generate(prompts, [20] * len(prompts), options)
        assert engine.model_calls is not None
        longest = max(r.tokens_out for r in runs[True])
        assert engine.model_calls < longest, (engine.model_calls, longest)
        for ours, plain in zip(runs[True], runs[False], strict=True):
            assert ours.text == plain.text and ours.token_ids == plain.token_ids
            assert ours.finish_reason == plain.finish_reason
            assert ours.logprobs == pytest.approx(plain.logprobs, abs=1e-4)


def test_the_guessing_switch_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from triplesmith.chains.engines import GenerationOptions, get_hf_engine
    from triplesmith.errors import ChainError

    engine = get_hf_engine("smollm2")
    engine.speculative = None
    monkeypatch.setenv("TRIPLESMITH_GUESS_TOKENS", "0")
    assert not engine._speculates(GenerationOptions())
    monkeypatch.setenv("TRIPLESMITH_GUESS_TOKENS", "yes")
    with pytest.raises(ChainError, match="TRIPLESMITH_GUESS_TOKENS='yes': use 1 or 0"):
        engine._speculates(GenerationOptions())


def graph_runs(prompts: list, options, cache: str) -> dict:  # noqa: ANN001
    """The engine's answers with the decode steps as they are and through the decode graph
    (chains/engines/cuda_graph.py), with and without finished rows leaving the batch."""
    from triplesmith.chains.engines import HFEngine

    engine = HFEngine("smollm2")
    engine.cpu_cache = cache
    engine.speculative = False  # the graph wraps `generate`'s decode steps
    runs = {}
    for graphs in (False, True):
        for compact in (False, True):
            engine.cuda_graphs, engine.compact = graphs, compact
            results = engine.generate(prompts, [20] * len(prompts), options)
            assert not [r for r in results if isinstance(r, Exception)]
            if graphs:
                assert engine.graphs and all(g.failed is None for g in engine.graphs)
                assert sum(g.replays for g in engine.graphs) > 0
                assert all(g.graphs == engine.on_gpu for g in engine.graphs)  # recorded there
            else:
                assert not engine.graphs
            runs[graphs, compact] = results
    return runs


@pytest.mark.slow
def test_decode_steps_through_the_graph_wrapper_keep_every_answer(carb_dir: Path) -> None:
    """On a CPU the decode-graph wrapper runs each step eagerly from its own tensors, after the
    warm-up step whose cache counters it puts back: the answers, log-probs and endings are those
    of the plain static-cache engine, in one `generate` call a chunk and with finished rows
    leaving (a wrapper per call)."""
    from triplesmith.chains.engines import GenerationOptions
    from triplesmith.chains.prompt import build_messages

    prompts = [build_messages(s, []) for s in carb_test_sentences(carb_dir, 6)]
    options = GenerationOptions(max_new_tokens=48, batch_size=len(prompts))
    runs = graph_runs(prompts, options, "static")
    reference = runs[False, False]
    for results in runs.values():
        for ours, plain in zip(results, reference, strict=True):
            assert ours.token_ids == plain.token_ids and ours.finish_reason == plain.finish_reason
            assert ours.logprobs == pytest.approx(plain.logprobs, abs=1e-4)


@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a CUDA GPU")
def test_decode_steps_replayed_from_a_cuda_graph_keep_every_answer(carb_dir: Path) -> None:
    """On a GPU the decode step is recorded once per `generate` call and replayed: the same
    answers and endings as the step run as it is (measured on the H200: 634 of 634 CaRB test
    answers identical for each chain, benchmarks/RESULTS.md)."""
    from triplesmith.chains.engines import GenerationOptions
    from triplesmith.chains.prompt import build_messages

    prompts = [build_messages(s, []) for s in carb_test_sentences(carb_dir, 16)]
    options = GenerationOptions(max_new_tokens=64, batch_size=len(prompts))
    runs = graph_runs(prompts, options, "static")
    for compact in (False, True):  # (in bf16 the rows' leaving changes log-probs by ~0.01)
        for ours, plain in zip(runs[True, compact], runs[False, compact], strict=True):
            assert ours.token_ids == plain.token_ids and ours.finish_reason == plain.finish_reason
            assert ours.logprobs == pytest.approx(plain.logprobs, abs=1e-3)


@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a CUDA GPU")
def test_two_engines_recording_at_once_on_one_gpu_keep_their_answers(carb_dir: Path) -> None:
    """Two engines on one GPU (two chains of a run) record and replay their decode graphs from
    two threads at once: each gives the answers it gives alone."""
    from concurrent.futures import ThreadPoolExecutor

    from triplesmith.chains.engines import GenerationOptions, HFEngine
    from triplesmith.chains.prompt import build_messages

    prompts = [build_messages(s, []) for s in carb_test_sentences(carb_dir, 12)]
    options = GenerationOptions(max_new_tokens=64, batch_size=6)
    engines = [HFEngine("smollm2"), HFEngine("smollm2")]
    halves = [prompts[:6], prompts[6:]]
    alone = [e.generate(p, [20] * 6, options) for e, p in zip(engines, halves, strict=True)]
    with ThreadPoolExecutor(2) as pool:
        jobs = [
            pool.submit(e.generate, p, [20] * 6, options)
            for e, p in zip(engines, halves, strict=True)
        ]
        together = [job.result() for job in jobs]
    for engine, ours, theirs in zip(engines, together, alone, strict=True):
        assert engine.graphs and all(g.failed is None and g.replays for g in engine.graphs)
        assert [r.token_ids for r in ours] == [r.token_ids for r in theirs]

"""`triplesmith export`: an adapter merged into its base (`--merged DIR`) and/or as a GGUF file
(`--gguf FILE`), for transformers, vLLM, llama.cpp, Ollama or LM Studio without peft."""

import json
from pathlib import Path

import typer
from rich.console import Console

from triplesmith.errors import ModelError

err = Console(stderr=True, soft_wrap=True, highlight=False)


def register(app: typer.Typer) -> None:
    @app.command()
    def export(
        adapter: str = typer.Argument(
            ..., help="Adapter: the --out folder of `triplesmith train`, or a Hub id owner/name."
        ),
        merged: Path | None = typer.Option(
            None, "--merged", help="Write the merged model (safetensors + tokenizer) to DIR."
        ),
        gguf: Path | None = typer.Option(
            None, "--gguf", help="Write the merged model as one GGUF file (llama.cpp, Ollama)."
        ),
        gguf_type: str = typer.Option("f16", help="GGUF weights: f32, f16, bf16 or q8_0."),
        base: str | None = typer.Option(
            None, help="Base model, when not the one the adapter names (smollm2, DIR, Hub id)."
        ),
        dtype: str = typer.Option(
            "auto", help="Merged weights: auto (the base's), float32, bfloat16 or float16."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
    ) -> None:
        """Merge an adapter into its base and write it as a transformers folder and/or a GGUF.

        The base is resolved on this machine from the adapter's manifest (the embedded SmolLM2
        by its Hub id and GGUF hash); a Hub adapter id is read from the Hub cache when offline.
        """
        from triplesmith.training.export import (
            GGUF_TYPES,
            export_gguf,
            export_merged,
            merge_adapter,
        )

        if merged is None and gguf is None:
            raise ModelError("export needs --merged DIR, --gguf FILE, or both")
        if gguf_type not in GGUF_TYPES:
            raise ModelError(f"--gguf-type {gguf_type!r}: use one of {', '.join(GGUF_TYPES)}")
        with err.status(f"merging {adapter} into its base"):
            adapted = merge_adapter(adapter, base=base, dtype=dtype, gguf=gguf is not None)
        written: dict[str, str] = {"base": adapted.base.name, "adapter_hash": adapted.adapter_hash}
        if merged is not None:
            with err.status(f"writing {merged}"):
                written["merged"] = str(export_merged(adapted, merged))
        if gguf is not None:
            with err.status(f"writing {gguf} ({gguf_type})"):
                written["gguf"] = str(export_gguf(adapted, gguf, gguf_type))
        if as_json:
            print(json.dumps(written))
            return
        for kind in ("merged", "gguf"):
            if kind in written:
                err.print(f"{kind}: {written[kind]}")

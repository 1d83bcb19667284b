"""Evaluators by name, as the CLI and `compare()` name them: `carb,benchie,triple-f1,format,judge`."""

from collections.abc import Callable, Sequence

from langchain_core.language_models.chat_models import BaseChatModel

from triplesmith.errors import EvaluatorError
from triplesmith.evaluators.base import Evaluator
from triplesmith.evaluators.exact import BenchieEvaluator, CarbEvaluator
from triplesmith.evaluators.format_validity import FormatEvaluator
from triplesmith.evaluators.judge import JudgeEvaluator, build_judge_model
from triplesmith.evaluators.triple_f1 import TripleF1Evaluator
from triplesmith.settings import Settings, get_settings

_FACTORIES: dict[str, Callable[[Settings], Evaluator]] = {
    "carb": lambda settings: CarbEvaluator(),
    "carb-binary": lambda settings: CarbEvaluator(binary=True),
    "benchie": lambda settings: BenchieEvaluator(),
    "triple-f1": lambda settings: TripleF1Evaluator(settings.triple_match_threshold),
    "triple-f1-exact": lambda settings: TripleF1Evaluator(exact=True),
    "format": lambda settings: FormatEvaluator(),
}
EVALUATOR_NAMES = (*_FACTORIES, "judge")


def _names(names: str | Sequence[str]) -> list[str]:
    parts = names.split(",") if isinstance(names, str) else list(names)
    cleaned = []
    for part in parts:
        if not isinstance(part, str):
            raise EvaluatorError(f"evaluator names must be strings, got {part!r}")
        name = part.strip()
        if name and name not in cleaned:
            cleaned.append(name)
    if not cleaned:
        raise EvaluatorError(
            f"no evaluator named in {names!r}; use a comma-separated list of "
            f"{', '.join(EVALUATOR_NAMES)}"
        )
    unknown = [name for name in cleaned if name not in EVALUATOR_NAMES]
    if unknown:
        raise EvaluatorError(
            f"unknown evaluator {', '.join(map(repr, unknown))}; "
            f"valid evaluators are {', '.join(EVALUATOR_NAMES)}"
        )
    return cleaned


def resolve_judge(judge_model: BaseChatModel | str | None, settings: Settings) -> BaseChatModel:
    """The judge chat model: the one given, or one built from a `provider:model` string
    (`judge_model`, else `TRIPLESMITH_JUDGE_MODEL`) with LangChain's `init_chat_model`."""
    if isinstance(judge_model, BaseChatModel):
        return judge_model
    model = judge_model or settings.judge_model
    if not model:
        raise EvaluatorError(
            "the judge evaluator needs a judge model: pass judge_model (a LangChain chat model "
            "or a 'provider:model' string such as 'openai:gpt-4o-mini') or set "
            "TRIPLESMITH_JUDGE_MODEL"
        )
    if not isinstance(model, str):
        raise EvaluatorError(
            f"judge_model must be a LangChain chat model or a 'provider:model' string, "
            f"got {type(model).__name__}"
        )
    return build_judge_model(model, settings)


def get_evaluators(
    names: str | Sequence[str],
    judge_model: BaseChatModel | str | None = None,
    settings: Settings | None = None,
) -> list[Evaluator]:
    """Evaluators for comma-separated names (or a list), in order, duplicates dropped."""
    settings = settings or get_settings()
    evaluators = []
    for name in _names(names):
        if name == "judge":
            evaluators.append(JudgeEvaluator(resolve_judge(judge_model, settings)))
        else:
            evaluators.append(_FACTORIES[name](settings))
    return evaluators


def check_names(names: str | Sequence[str]) -> list[str]:
    """The evaluator names, cleaned; an unknown one is an `EvaluatorError` naming the valid ones."""
    return _names(names)

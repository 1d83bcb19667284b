"""The exception families: every error a user can cause is one of these."""


class TriplesmithError(Exception):
    """Base of every error triplesmith raises on purpose; the CLI prints it without a traceback."""


class DatasetError(TriplesmithError):
    """A dataset file, row or split is malformed or unusable."""


class ModelError(TriplesmithError):
    """A model cannot be found, loaded or converted."""


class ChainError(TriplesmithError):
    """A chain spec is invalid or a chain cannot run."""


class EvaluatorError(TriplesmithError):
    """An evaluator got input it cannot score, or a judge answered out of range."""


class TrainingError(TriplesmithError):
    """Training cannot start or continue with the given data, model or machine."""


class ExperimentError(TriplesmithError):
    """An experiment store or run is inconsistent."""


class InvalidInputError(ChainError, ValueError):
    """A request the graph cannot run (no sentence, bad gold, unknown chain). A ValueError too,
    so `langgraph dev` passes its message back to the caller instead of masking it."""


class SettingsError(TriplesmithError):
    """A `TRIPLESMITH_*` (or provider) environment variable with a value that cannot be used."""


class ConfigError(TriplesmithError, ValueError):
    """A run configuration with an unknown key or a value out of range (a ValueError too, so a
    graph request with one gets its message back from `langgraph dev`)."""

"""The user-facing errors of nlpforge, in one catalogue.

A user error (a bad file, flag or request) raises a `NlpforgeError` subclass whose message
says what happened and what to do. The CLI prints it on one line and exits non-zero; the
server answers it with a 4xx and a JSON body. Anything else escaping is a bug.
"""


class NlpforgeError(Exception):
    """Base of every error a user can cause and fix."""

    code = "E000"
    exit_code = 2

    @property
    def message(self) -> str:
        """What happened and what to do, without the code."""
        return str(self.args[0]) if self.args else self.__class__.__name__

    def __str__(self):
        return f"[{self.code}] {self.message}"


class DataError(NlpforgeError):
    """A data file is missing, empty, malformed or inconsistent."""

    code = "E100"


class ModelNotFoundError(NlpforgeError):
    """A base model name or folder cannot be resolved locally."""

    code = "E200"


class ArtifactError(NlpforgeError):
    """A model folder is not a complete nlpforge artifact."""

    code = "E210"


class ConfigError(NlpforgeError):
    """A setting, flag or config file is invalid."""

    code = "E300"


class InputError(NlpforgeError):
    """An input given to a model (a text, a text pair, a masked sentence) is malformed or too long.

    `status` is what the model server answers with (400, or 413 for too long)."""

    code = "E420"

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status
        self.headers = {}


class TrainingInterrupted(NlpforgeError):
    """SIGTERM or SIGINT arrived during training; a checkpoint was written and the run can be resumed."""

    code = "E500"
    exit_code = 143


class RuleStopped(TrainingInterrupted):
    """A Debugger rule with the stop action found issues; a checkpoint was written and the run can be resumed
    once the cause is fixed."""

    code = "E510"
    exit_code = 3


class VocabularyError(NlpforgeError):
    """A word asked for is not in the vocabulary of the vectors or tokenizer."""

    code = "E400"


class TrainingJobError(NlpforgeError):
    """A training job failed, was stopped, or cannot be found; the message holds its failure reason."""

    code = "E600"


class ProcessingJobError(NlpforgeError):
    """A processing job (or a batch transform's instances) failed, or cannot be found."""

    code = "E605"


class EndpointError(NlpforgeError):
    """An endpoint cannot be created, reached or found."""

    code = "E610"


class TuningError(NlpforgeError):
    """A hyperparameter tuning job is misconfigured or has no usable trial."""

    code = "E620"


class TrackingError(NlpforgeError):
    """An experiment run cannot be found or the tracking store cannot be read."""

    code = "E630"


class RequestError(NlpforgeError):
    """A request to the model server is malformed, too large, or names what does not exist.

    `status` is the HTTP status the server answers with (400 unless said otherwise)."""

    code = "E700"

    def __init__(self, message: str, status: int = 400, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


class ServingError(NlpforgeError):
    """The model server cannot start or cannot load a model as asked."""

    code = "E710"

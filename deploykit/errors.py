"""The exceptions deploykit stops on, each with the exit code the CLI edge turns it into.

    0    success
    1    anything unexpected (a bug, a library failure nobody foresaw): one line, --debug for the traceback
    2    UserError: bad input the user can fix (a path, a recipe key, a column, a model a stage cannot take)
    3    CheckError: a correctness check refused an artifact (reload, ONNX parity, vocabulary pruning, fusion)
    4    GateError: an accuracy gate stopped the run (the stage lost more than the recipe allows)
    130  interrupted (SIGINT, Ctrl-C); 143 terminated (SIGTERM): temporary folders are removed first

Each message is the whole story in one line: what is wrong, where, and what would fix it.
"""

from __future__ import annotations


class DeploykitError(Exception):
    """Base of the errors the CLI edge prints as one line and exits with `exit_code`."""

    exit_code = 1


class UserError(DeploykitError):
    """Bad input that the user can fix (a path, a recipe key, a column, a model the stage cannot take)."""

    exit_code = 2


class PromptTooLong(UserError):
    """A prompt whose tokens plus max_new_tokens pass a causal LM's positions; `prompt` is its index in the call, which
    `shifted` moves for a caller that generated in parts (deploykit/predict.py answers 8 texts at a time)."""

    def __init__(self, prompt: int, tokens: int, max_new_tokens: int, limit: int) -> None:
        self.prompt, self.tokens, self.max_new_tokens, self.limit = prompt, tokens, max_new_tokens, limit
        super().__init__(f"generate: prompt {prompt} is {tokens} tokens; with max_new_tokens={max_new_tokens} it "
                         f"passes the model's {limit} positions, past which it answers from positions it never saw: "
                         "shorten the prompt or lower max_new_tokens")

    def shifted(self, by: int) -> PromptTooLong:
        return PromptTooLong(self.prompt + by, self.tokens, self.max_new_tokens, self.limit)


class CheckError(DeploykitError):
    """A correctness check refused an artifact: the message names the check and the worst difference."""

    exit_code = 3
    check = "correctness"  # printed as "error: <check> check failed: <message>"

    def __init__(self, message: str, check: str | None = None) -> None:
        super().__init__(message)
        if check is not None:
            self.check = check  # e.g. CheckError("... logits moved by 3e-3", check="vocabulary pruning")


class ParityError(CheckError):
    """An exported graph's outputs (logits, greedy tokens) drifted from PyTorch's beyond the tolerance."""

    check = "ONNX parity"


class ReloadError(CheckError):
    """A saved folder does not reload as the in-memory model with plain `from_pretrained` (a pruning bug)."""

    check = "reload"


class GateError(UserError):
    """An artifact lost more accuracy than the recipe allows: the message names the stage, the drop and the knob.

    A UserError too, because the fix is the user's (a recipe knob), so code that stops on bad input
    stops on it; the CLI still tells the two apart by `exit_code`.
    """

    exit_code = 4


class Terminated(SystemExit):
    """SIGTERM, raised in the main thread so that `staging()` removes its temporary folder on the way out.

    A SystemExit, not an Exception: `except Exception` in library code must not swallow it.
    """

    def __init__(self) -> None:
        super().__init__(143)

"""The `deploykit` command group (`new_app`): -h as --help, and a usage error (a missing argument, an unknown
option or command, a bad flag value) as one `error:` line naming the fix, exit 2, like every other failure of the
CLI; typer would draw a box of five lines under the usage text."""

from __future__ import annotations

import difflib
import sys
from enum import Enum
from pathlib import Path

import typer
import typer.core
from typer.core import TyperGroup

# the click typer parses with: its own copy from typer 0.2x on (typer.core._click), the click package before
_click = getattr(typer.core, "_click", None) or typer.core.click
# end of input at a prompt: typer's own Abort, and click's where that copy has one
ABORT = tuple({typer.Abort, getattr(_click.exceptions, "Abort", typer.Abort)})


class OneLineUsageErrors(TyperGroup):
    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except _click.exceptions.NoArgsIsHelpError as err:  # `deploykit` alone: the help, as click prints it
            err.show()
            sys.exit(err.exit_code)
        except _click.exceptions.UsageError as err:
            print(f"error: {_message(err)} (see `{self._help_of(err, args, kwargs)} --help`)", file=sys.stderr)
            sys.exit(err.exit_code)
        except _click.exceptions.ClickException as err:
            print(f"error: {err.format_message()}", file=sys.stderr)
            sys.exit(err.exit_code)
        except ABORT:
            print("error: aborted", file=sys.stderr)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def _help_of(self, err, args: tuple, kwargs: dict) -> str:
        """The command whose --help answers `err`: the one whose context raised it, else (click raises an option's
        missing value without a context) the group for its own options, the subcommand named on the line for
        the subcommand's."""
        if err.ctx is not None:
            return err.ctx.command_path
        prog = kwargs.get("prog_name") or "deploykit"
        if getattr(err, "option_name", None) in {opt for param in self.params for opt in param.opts}:
            return prog
        line = list(args[0] if args else kwargs.get("args") or sys.argv[1:])
        first = next((word for word in line if not word.startswith("-")), None)
        return f"{prog} {first}" if first in self.commands else prog


def _message(err) -> str:
    """click's message; for an unknown option, the closest known one as "Did you mean" (click lists every close
    one, `--qiet` giving "Possible options: --quiet, --set"), as it words an unknown command."""
    possible = getattr(err, "possibilities", None)
    if isinstance(err, _click.exceptions.NoSuchOption) and possible:
        best = difflib.get_close_matches(err.option_name, possible, n=1, cutoff=0.0)[0]
        return f"No such option: {err.option_name}. Did you mean {best}?"
    # pydantic's "Value error, " reaches a choice's message through typer's own validation
    return err.format_message().rstrip(".").replace("Value error, ", "")


def new_app(help: str) -> typer.Typer:
    """The Typer app the CLI's commands register on: this group class, -h as --help, no shell completion, no
    pretty tracebacks (deploykit's edge prints one line)."""
    return typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                       cls=OneLineUsageErrors, context_settings={"help_option_names": ["-h", "--help"]}, help=help)


def path_arg(value: str | Path) -> Path:
    """Every path option's and argument's parser: "" or spaces would become Path(".") (the current folder) and
    be refused later, if at all, as "." with no word of the empty argument."""
    if isinstance(value, Path):
        return value
    if not value.strip():
        raise typer.BadParameter("an empty path: name a file or folder")
    return Path(value)


class Target(str, Enum):
    """`deploykit bench --target`: bench.targets as a choice typer checks, so a typo is named as the flag's, not as a
    --set the user never wrote."""
    cpu = "cpu"
    edge = "edge"
    gpu = "gpu"


def text_arg(value: str) -> str:
    """Every text and prompt argument's parser: "" or spaces (an unset shell variable, a stray pair of quotes) would be
    answered as if it were a text, where a file's blank lines are skipped."""
    from deploykit.records import is_blank

    if is_blank(value):
        raise typer.BadParameter("an empty text (or invisible characters only): give its words (a file's blank lines "
                                 "are skipped; an argument's are not)")
    return value

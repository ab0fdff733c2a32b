"""The `deploykit` command group: a usage error (a missing argument, an unknown option or command, a bad flag
value) is one `error:` line naming the fix, exit 2, like every other failure of the CLI; typer would draw a
box of five lines under the usage text."""

from __future__ import annotations

import sys

import typer.core
from typer.core import TyperGroup

# the click typer parses with: its own copy from typer 0.2x on (typer.core._click), the click package before
_click = getattr(typer.core, "_click", None) or typer.core.click


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
            print(f"error: {err.format_message().rstrip('.')} (see `{self._help_of(err, args, kwargs)} --help`)",
                  file=sys.stderr)
            sys.exit(err.exit_code)
        except _click.exceptions.ClickException as err:
            print(f"error: {err.format_message()}", file=sys.stderr)
            sys.exit(err.exit_code)
        except _click.exceptions.Abort:  # end of input at a prompt
            print("error: aborted", file=sys.stderr)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def _help_of(self, err, args: tuple, kwargs: dict) -> str:
        """The command whose --help answers `err`: the subcommand named on the line, also where click raised the
        error in the group's context (an option of the subcommand missing its value)."""
        path = err.ctx.command_path if err.ctx is not None else "deploykit"
        if err.ctx is not None and err.ctx.parent is not None:
            return path  # raised in the subcommand's own context
        line = list(args[0] if args else kwargs.get("args") or sys.argv[1:])
        named = next((word for word in line if word in self.commands), None)
        return f"{path} {named}" if named else path

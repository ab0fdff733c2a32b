"""The one exception a user can cause: caught at the CLI edge, printed as one line, exit code 2."""


class UserError(Exception):
    """Bad input that the user can fix (a path, a recipe key, a column, a model the stage cannot take).

    The message is the whole story in one line: what is wrong, where, and what would fix it.
    """

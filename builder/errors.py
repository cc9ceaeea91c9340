"""Error types the command line turns into one line and an exit code, and
the one mapping from failures to lines and codes that ``fracbuild`` and
``fractrain`` both run (it imports nothing heavier than click, so the
trainer's command line works where only the builder is installed)."""

from __future__ import annotations

import errno
import re
from typing import Callable, Sequence

import click

EXIT_USER_ERROR = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


class UserError(Exception):
    """A bad option, file or state the user can fix. The CLI prints
    ``error: <message>`` on one line and exits with code 2; nothing is written."""


class BuildFailure(Exception):
    """A build, verify or publish that started but could not finish (a render
    that never passes its fill check, a crashed worker, a full disk). The CLI
    prints one line and exits with code 1; temporaries are removed."""


class Interrupted(Exception):
    """A command stopped by a signal, carried past click (which would turn a
    KeyboardInterrupt into a bare "aborted") to the mapping below. ``message``:
    the line to print (empty: the command's default, which says how to
    continue); ``exit_code``: 128 + the signal number."""

    def __init__(self, message: str = "", exit_code: int = EXIT_INTERRUPTED):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class InterruptibleGroup(click.Group):
    """A click group whose commands' Ctrl-C reaches :func:`run_cli` as
    :class:`Interrupted`, so the user sees how to continue."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Interrupted:
            raise
        except KeyboardInterrupt:
            raise Interrupted from None
        except Exception as error:
            if caused_by_interrupt(error):
                raise Interrupted from None
            raise


def caused_by_interrupt(error: BaseException) -> bool:
    """Whether a KeyboardInterrupt is in ``error``'s chain: an interrupt can
    surface as another error (numba re-raises it as a SystemError)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


# user:password@ inside a URL; the password is replaced, the rest kept.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):[^/\s@]*@")


def redact(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host``
    replaced by ``***``: messages never echo a secret."""
    return _URL_PASSWORD.sub(r"\g<head>:***@", text)


def describe_os_error(error: OSError) -> str:
    """``cannot write PATH: No space left on device`` and the like."""
    reason = error.strerror or str(error)
    if error.filename is None:
        return reason
    verb = "write" if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG) else "use"
    return f"cannot {verb} {error.filename}: {reason}"


# click >= 8.2 raises this for a bare command (older versions print the help and exit 0 themselves).
NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def run_cli(command: click.BaseCommand, argv: Sequence[str] | None, prog_name: str, *, interrupted: str,
            failures: tuple[type[BaseException], ...] = (), option_hints: dict[str, str] | None = None,
            explain: Callable[[UserError], str] = str,
            say: Callable[[str], None] = lambda message: click.echo(message, err=True)) -> int:
    """Run ``command`` and turn every known failure into one line on stderr
    and an exit code: 2 for a user error (``error: ...``), 1 for a run that
    started and could not finish (``failed: ...``: BuildFailure, the
    ``failures`` given, an OS error such as a full disk), 130 for Ctrl-C
    (``interrupted``, which says how to continue). ``option_hints``: what to
    add when an option the command lacks is given (``--endpoint-url`` ->
    where the setting comes from instead). ``explain``: a user error's line
    (e.g. naming the flag behind a configuration key). A bare command shows
    its help (exit 2, as click does). Secrets in URLs are redacted from
    every line."""

    def line(message: str) -> None:
        say(redact(message))

    try:
        command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as done:
        return done.exit_code
    except Interrupted as stopped:
        line(stopped.message or interrupted)
        return stopped.exit_code
    except KeyboardInterrupt:
        line(interrupted)
        return EXIT_INTERRUPTED
    except click.exceptions.Abort as error:
        # click raises Abort from a KeyboardInterrupt outside a command's body too.
        line(interrupted if isinstance(error.__cause__ or error.__context__, KeyboardInterrupt)
             else "error: aborted")
        return EXIT_INTERRUPTED
    except NO_ARGS_IS_HELP as shown:
        click.echo(shown.ctx.get_help(), err=True)
        return EXIT_USER_ERROR
    except click.ClickException as error:  # a bad option value, a missing argument, ...
        name = getattr(error, "option_name", None) or ""
        hint = (option_hints or {}).get(name) if isinstance(error, click.NoSuchOption) else None
        line(f"error: No such option '{name}': {hint}" if hint else f"error: {error.format_message()}")
        return EXIT_USER_ERROR
    except UserError as error:
        line(f"error: {explain(error)}")
        return EXIT_USER_ERROR
    except (BuildFailure, *failures) as error:
        line(f"failed: {error}")
        return EXIT_FAILURE
    except OSError as error:  # a full disk or a vanished file where no caller said more
        line(f"failed: {describe_os_error(error)}")
        return EXIT_FAILURE
    return 0

"""Error types the command line turns into one line and an exit code."""


class UserError(Exception):
    """A bad option, file or state the user can fix. The CLI prints
    ``error: <message>`` on one line and exits with code 2; nothing is written."""


class BuildFailure(Exception):
    """A build, verify or publish that started but could not finish (a render
    that never passes its fill check, a crashed worker, a full disk). The CLI
    prints one line and exits with code 1; temporaries are removed."""

"""The errors a user can cause and fix: each message is one line naming the key or file.

They all derive from :class:`UserError`, which the stage scripts turn into that line on stderr and
exit code 2 (``pipeline.cli.run``); anything else is a bug and keeps its traceback. The second base
class keeps the usual meaning for callers (a bad value is a ``ValueError``). Importing this module
imports nothing else, so a stage can name the errors without loading torch.
"""


class UserError(Exception):
    """Bad input the user can fix: params, an env id, a file, a server, a budget."""


class ConfigError(UserError, ValueError):
    """A params file or dict that does not describe a valid configuration."""


class EnvSpecError(UserError, ValueError):
    """An environment id, kwargs or space this adapter cannot handle."""


class ReplayError(UserError, ValueError):
    """A saved replay buffer that is missing, corrupt or does not match."""


class CheckpointError(UserError, ValueError):
    """A checkpoint or run folder that is missing, unreadable, stale or not ours."""


class CompileError(UserError, RuntimeError):
    """torch.compile cannot run on this machine (the message names the ``compile`` param)."""


class DivergenceError(UserError, FloatingPointError):
    """Training diverged: updates kept failing (NaN or Inf), or the weights are no longer finite.
    Training stops, naming the update and the last good checkpoint, which is kept."""


class EnvDataError(UserError, ValueError):
    """An environment returned a non-finite observation or reward (named with env, key, step)."""

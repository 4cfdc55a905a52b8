"""pandera schemas for the tables the stages read and write (DESIGN §6).

Every ``validate_*`` returns the validated DataFrame or raises :class:`DataValidationError` whose
message is one line naming the source, the column and the first bad rows, e.g.
``metrics/train/losses.csv: column 'loss/reward' has non-finite values at rows [3, 7]``.
Rows are the DataFrame's index labels (0-based data rows for a CSV read with pandas).

Columns have pandera dtypes (int64, float64, bool, str). A parser first casts what may arrive
otherwise, and the frame comes back cast: any integer width to int64, integers and float32 to
float64, a header-only CSV's empty object columns to the column's dtype. Nothing else is cast:
pandera's ``coerce=True`` would also take ``"1.5"`` and ``True`` as numbers, 0.5 as the integer 0.

Tables:
- transitions (:func:`transitions_schema`, built from the replay buffer with
  :func:`transitions_frame`): ``step, stream, reward, is_first, is_last, is_terminal,
  action_0…, obs/<key>_<i>…`` (``stream``: the env of the step; episodes are checked per stream);
- episodes (:data:`EPISODES`): ``dreamer.records.EPISODE_COLUMNS`` (``episode, seed, env_step,
  length, return``) ``[, stage]``; the training episodes (``metrics/train/returns.csv``) also
  have a non-decreasing ``env_step``;
- training losses (``metrics/train/losses.csv``): ``dreamer.records.LOSS_COLUMNS``
  (``gradient_step, env_step, wall_seconds, updates_per_second, skipped_updates``), ``loss/*…``
  and any other numeric columns.

This is the only module that imports pandera.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaError, SchemaErrorReason, SchemaErrors

from dreamer.errors import UserError
from dreamer.records import EPISODE_COLUMNS, LOSS_COLUMNS

_SHOW_ROWS = 5  # bad rows named in a message
_TOLERANCE = 1e-6  # slack on bounds, for float32 round-off


class DataValidationError(UserError, ValueError):
    """A table that breaks its schema; ``str()`` is one readable line.

    Attributes:
        problems: one short description per failed check, in schema order.
        failure_cases: pandera's table of failure cases.
    """

    def __init__(self, message: str, problems: Sequence[str] = (), failure_cases=None):
        super().__init__(message)
        self.problems = list(problems)
        self.failure_cases = failure_cases


# --- columns and checks ---------------------------------------------------------------------------
# The kind a message names: (pandera dtype, numpy dtype kinds cast to that dtype before the check).
_KINDS = {
    "integer": ("int64", "iu"),
    "number": ("float64", "iuf"),
    "numeric or boolean": ("float64", "biuf"),
    "boolean": ("bool", ""),
    "string": ("str", ""),
}


def _column(kind: str, *checks: pa.Check, **kwargs) -> pa.Column:
    """A column of ``kind``, cast first where compatible (module docstring); nullable, as the
    checks judge NaN (as non-finite, say)."""
    dtype, castable = _KINDS[kind]

    def cast(series: pd.Series) -> pd.Series:
        if len(series) and series.dtype.kind not in castable:
            return series  # left for the dtype check to report
        try:
            return series.astype(dtype)
        except (TypeError, ValueError):  # e.g. a nullable Int64 column holding <NA>
            return series

    return pa.Column(
        dtype,
        list(checks),
        parsers=pa.Parser(cast),
        nullable=True,
        metadata={"kind": kind},
        **kwargs,
    )


_FINITE = pa.Check(np.isfinite, ignore_na=False, error="has non-finite values")
_NON_NEGATIVE = pa.Check.ge(0, error="has values below 0")
_NOT_INFINITE = pa.Check(lambda s: ~np.isinf(s), error="has infinite values")
_INCREASING = pa.Check(lambda s: ~(s.diff() <= 0), error="is not strictly increasing")
_NON_DECREASING = pa.Check(lambda s: ~(s.diff() < 0), error="decreases")


def _bounds(low: float | None, high: float | None) -> list[pa.Check]:
    """Checks of ``low <= x <= high``; None is unbounded. Both given: slack for float32."""
    if low is not None and high is not None:
        slack_low, slack_high = (_TOLERANCE * max(1.0, abs(b)) for b in (low, high))
        error = f"has values outside [{low:g}, {high:g}]"
        return [pa.Check.in_range(low - slack_low, high + slack_high, error=error)]
    if low is not None:
        return [pa.Check.ge(low, error=f"has values below {low:g}")]
    if high is not None:
        return [pa.Check.le(high, error=f"has values above {high:g}")]
    return []


def _frame_check(column: str, error: str, test: Callable[[pd.DataFrame], pd.Series]) -> pa.Check:
    """A check across columns, reported under ``column``; skipped if its inputs are unusable."""

    def check(df: pd.DataFrame):
        try:
            return test(df)
        except (KeyError, TypeError, ValueError):
            return True  # a missing or mistyped column, reported by its own checks

    return pa.Check(check, name=column, error=error, ignore_na=False)


def _flag(df: pd.DataFrame, name: str) -> np.ndarray:
    if not pd.api.types.is_bool_dtype(df[name].dtype):
        raise TypeError(name)
    return df[name].to_numpy()


# --- transitions ----------------------------------------------------------------------------------
def action_columns(action_dim: int) -> list[str]:
    return [f"action_{i}" for i in range(action_dim)]


def vector_columns(key: str, size: int) -> list[str]:
    """Column names of vector observation ``key``: ``obs/<key>_0 … obs/<key>_<size-1>``."""
    return [f"obs/{key}_{i}" for i in range(size)]


def transitions_frame(
    reward: np.ndarray,
    is_first: np.ndarray,
    is_last: np.ndarray,
    is_terminal: np.ndarray,
    action: np.ndarray,
    vector_obs: Mapping[str, np.ndarray] | None = None,
    step: np.ndarray | None = None,
    stream: np.ndarray | None = None,
) -> pd.DataFrame:
    """The transitions table from replay arrays (image observations are left out).

    Args:
        reward, is_first, is_last, is_terminal: ``(N,)``.
        action: ``(N, A)`` in agent space (one-hot for discrete actions).
        vector_obs: ``{key: (N, D)}`` (or ``(N,)``) vector observations.
        step: ``(N,)``; default ``0 … N-1``.
        stream: ``(N,)`` the env each step comes from; default all 0.
    """
    N = len(reward)
    action = np.asarray(action).reshape(N, -1)
    columns: dict[str, np.ndarray] = {
        "step": np.arange(N, dtype=np.int64) if step is None else np.asarray(step),
        "stream": np.zeros(N, np.int64) if stream is None else np.asarray(stream, np.int64),
        "reward": np.asarray(reward, dtype=np.float64),
        "is_first": np.asarray(is_first, dtype=bool),
        "is_last": np.asarray(is_last, dtype=bool),
        "is_terminal": np.asarray(is_terminal, dtype=bool),
    }
    columns.update(zip(action_columns(action.shape[1]), action.T.astype(np.float64), strict=True))
    for key, values in (vector_obs or {}).items():
        values = np.asarray(values).reshape(N, -1)
        columns.update(
            zip(vector_columns(key, values.shape[1]), values.T.astype(np.float64), strict=True)
        )
    return pd.DataFrame(columns)


def _obs_bound(bounds: Mapping | None, column: str) -> float | None:
    """Bound of ``obs/<key>_<i>`` from ``{column: x}`` or ``{key: array}``; None if unbounded."""
    if not bounds:
        return None
    if column in bounds:
        value = bounds[column]
    else:
        match = re.fullmatch(r"obs/(.+)_(\d+)", column)
        if match is None or match.group(1) not in bounds:
            return None
        value = np.asarray(bounds[match.group(1)], dtype=float).reshape(-1)[int(match.group(2))]
    value = float(value)
    return value if np.isfinite(value) else None


def transitions_schema(
    action_dim: int,
    discrete: bool,
    vector_columns: Sequence[str] = (),
    obs_low: Mapping | None = None,
    obs_high: Mapping | None = None,
) -> pa.DataFrameSchema:
    """Schema of the replay transitions table.

    Args:
        action_dim: A, the number of ``action_<i>`` columns.
        discrete: actions are one-hot (exactly one 1; all zeros allowed at ``is_first``), else
            each action is in [-1, 1] (agent space).
        vector_columns: the ``obs/<key>_<i>`` columns, all required and finite.
        obs_low, obs_high: bounds, keyed by column (``{"obs/state_2": -8.0}``) or by observation
            key (``{"state": box.low}``); infinite or missing bounds are not checked.
    """
    columns = {
        "step": _column("integer", _NON_NEGATIVE, _INCREASING),
        "stream": _column("integer", _NON_NEGATIVE, required=False),
        "reward": _column("number", _FINITE),
        "is_first": _column("boolean"),
        "is_last": _column("boolean"),
        "is_terminal": _column("boolean"),
    }
    zero_or_one = pa.Check.isin([0, 1], error="has values other than 0 and 1")
    action_checks = [zero_or_one] if discrete else _bounds(-1.0, 1.0)
    for name in action_columns(action_dim):
        columns[name] = _column("number", _FINITE, *action_checks)
    for name in vector_columns:
        bounds = _bounds(_obs_bound(obs_low, name), _obs_bound(obs_high, name))
        columns[name] = _column("number", _FINITE, *bounds)

    def episode_starts(df: pd.DataFrame) -> pd.Series:
        """Within each stream (env), the first row and every row after ``is_last`` start one."""
        is_first, is_last = _flag(df, "is_first"), _flag(df, "is_last")
        stream = df["stream"].to_numpy() if "stream" in df else np.zeros(len(df), np.int64)
        must_start = np.ones(len(df), bool)
        for s in np.unique(stream):
            rows = np.flatnonzero(stream == s)
            must_start[rows[1:]] = is_last[rows[:-1]]
        return pd.Series(~must_start | is_first, index=df.index)

    def terminal_is_last(df: pd.DataFrame) -> pd.Series:
        return pd.Series(~_flag(df, "is_terminal") | _flag(df, "is_last"), index=df.index)

    def one_hot(df: pd.DataFrame) -> pd.Series:
        total = df[action_columns(action_dim)].to_numpy(dtype=float).sum(axis=1)
        ok = (total == 1) | ((total == 0) & _flag(df, "is_first"))
        return pd.Series(ok, index=df.index)

    checks = [
        _frame_check(
            "is_first",
            "is false at an episode start (an env's first row or after its is_last)",
            episode_starts,
        ),
        _frame_check("is_terminal", "is true where is_last is false", terminal_is_last),
    ]
    if discrete:
        checks.append(
            _frame_check(
                f"action_0..action_{action_dim - 1}",
                "is not one-hot (all zeros allowed only at is_first)",
                one_hot,
            )
        )
    return pa.DataFrameSchema(columns, checks=checks, name="transitions")


# --- episodes and training metrics ----------------------------------------------------------------
# The checks of each column the library names (dreamer.records' EPISODE_COLUMNS and LOSS_COLUMNS):
# built from those lists, so a column added there without a check here fails at import.
_EPISODE_CHECKS = {
    "episode": _column("integer", _NON_NEGATIVE, unique=True),
    "seed": _column("integer"),
    "env_step": _column("integer", _NON_NEGATIVE),
    "length": _column("integer", pa.Check.gt(0, error="has values <= 0")),
    "return": _column("number", _FINITE),
}
_EPISODE_COLUMNS = {
    **{name: _EPISODE_CHECKS[name] for name in EPISODE_COLUMNS},
    "stage": _column("string", required=False),
}

EPISODES = pa.DataFrameSchema(_EPISODE_COLUMNS, name="episodes")
"""One row per finished episode (evaluation episodes, and the base of the training returns)."""

TRAIN_RETURNS = pa.DataFrameSchema(
    {**_EPISODE_COLUMNS, "env_step": _column("integer", _NON_NEGATIVE, _NON_DECREASING)},
    name="train returns",
)
"""``metrics/train/returns.csv``: training episodes in the order they ended."""

_LOSS_CHECKS = {
    "gradient_step": _column("integer", _NON_NEGATIVE, _INCREASING),
    "env_step": _column("integer", _NON_NEGATIVE, _NON_DECREASING),
    "wall_seconds": _column("number", _FINITE, _NON_NEGATIVE),
    "updates_per_second": _column("number", _FINITE, _NON_NEGATIVE),
    "skipped_updates": _column("integer", _NON_NEGATIVE),
}

TRAIN_LOSSES = pa.DataFrameSchema(
    {
        **{name: _LOSS_CHECKS[name] for name in LOSS_COLUMNS},
        r"^loss/.+$": _column("number", _FINITE, required=False, regex=True),
        # any other column (behavior/*, …): numeric, NaN allowed (not measured yet), infinity not
        rf"^(?!loss/)(?!(?:{'|'.join(LOSS_COLUMNS)})$).+$": _column(
            "numeric or boolean", _NOT_INFINITE, required=False, regex=True
        ),
    },
    name="train losses",
)
"""``metrics/train/losses.csv``: one row per logging interval of training."""


# --- validation -----------------------------------------------------------------------------------
def _rows(failure_cases) -> list:
    if not isinstance(failure_cases, pd.DataFrame) or "index" not in failure_cases:
        return []
    index = failure_cases["index"].dropna()
    return list(dict.fromkeys(v.item() if hasattr(v, "item") else v for v in index))


def _describe(error: SchemaError, df: pd.DataFrame) -> str:
    """One failed check as ``column 'x' has … at rows [...]``."""
    reason = error.reason_code
    check = error.check
    if reason == SchemaErrorReason.COLUMN_NOT_IN_DATAFRAME:
        missing = error.failure_cases
        if isinstance(missing, pd.DataFrame):
            missing = ", ".join(map(str, missing["failure_case"]))
        return f"column '{missing}' is missing"
    column = getattr(error, "column_name", None)
    if column is None and isinstance(check, pa.Check):
        column = check.name  # frame checks are named after the column they report on
    if reason == SchemaErrorReason.WRONG_DATATYPE:
        kind = error.schema.metadata["kind"]
        return f"column '{column}' has dtype {df[column].dtype}, expected {kind}"
    if reason == SchemaErrorReason.CHECK_ERROR:
        first = str(error).splitlines()[0]
        return f"column '{column}': check could not run ({first})"
    if reason == SchemaErrorReason.SERIES_CONTAINS_DUPLICATES:
        what = "has duplicate values"
    elif isinstance(check, pa.Check) and check.error:
        what = check.error
    else:
        what = f"fails {check}"
    rows = _rows(error.failure_cases)
    if not rows:
        return f"column '{column}' {what}"
    shown = ", ".join(map(str, rows[:_SHOW_ROWS]))
    more = f", … ({len(rows)} rows)" if len(rows) > _SHOW_ROWS else ""
    return f"column '{column}' {what} at rows [{shown}{more}]"


def validate(df: pd.DataFrame, schema: pa.DataFrameSchema, source: str) -> pd.DataFrame:
    """Validate ``df`` lazily (all checks run); raise one line naming ``source`` on failure."""
    try:
        return schema.validate(df, lazy=True)
    except SchemaErrors as exc:
        # A column of the wrong dtype is reported for that alone: its value checks mean nothing.
        wrong_dtype = SchemaErrorReason.WRONG_DATATYPE
        mistyped = {e.column_name for e in exc.schema_errors if e.reason_code == wrong_dtype}
        errors = [
            e
            for e in exc.schema_errors
            if e.reason_code == wrong_dtype or getattr(e, "column_name", None) not in mistyped
        ]
        problems = list(dict.fromkeys(_describe(e, df) for e in errors))
        message = f"{source}: {problems[0]}"
        if len(problems) > 1:
            others = "; ".join(problems[1:4]) + ("; …" if len(problems) > 4 else "")
            message += f" (and {len(problems) - 1} more: {others})"
        raise DataValidationError(message, problems, exc.failure_cases) from exc


def validate_transitions(
    df: pd.DataFrame,
    source: str,
    action_dim: int,
    discrete: bool,
    vector_columns: Sequence[str] = (),
    obs_low: Mapping | None = None,
    obs_high: Mapping | None = None,
) -> pd.DataFrame:
    """Validate a transitions table; see :func:`transitions_schema` for the arguments."""
    schema = transitions_schema(action_dim, discrete, vector_columns, obs_low, obs_high)
    return validate(df, schema, source)


def validate_episodes(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Validate an episodes table (evaluation episodes, or any episode list)."""
    return validate(df, EPISODES, source)


def validate_train_returns(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Validate ``metrics/train/returns.csv`` (episodes with non-decreasing ``env_step``)."""
    return validate(df, TRAIN_RETURNS, source)


def validate_train_losses(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Validate ``metrics/train/losses.csv``: increasing ``gradient_step``, finite losses."""
    return validate(df, TRAIN_LOSSES, source)


def read_csv(path: str | Path, validator: Callable[..., pd.DataFrame], **kwargs) -> pd.DataFrame:
    """Read a CSV and validate it with ``validator(df, source=path, **kwargs)``."""
    return validator(pd.read_csv(path), str(path), **kwargs)

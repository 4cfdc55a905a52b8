"""pipeline.schemas: good tables pass; a broken rule fails with one line naming source, column."""

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pandera")
from pipeline import schemas  # noqa: E402
from pipeline.schemas import DataValidationError  # noqa: E402

SOURCE = "data/warmup/transitions"
STATE = schemas.vector_columns("state", 3)
LOW = {"state": np.array([-1.0, -1.0, -8.0])}
HIGH = {"state": np.array([1.0, 1.0, np.inf])}  # unbounded above for the last entry


def _transitions(discrete: bool, n: int = 12) -> pd.DataFrame:
    """Two episodes (rows 0–5 ending terminal, 6–11 ongoing); actions zero at is_first."""
    rng = np.random.default_rng(0)
    is_first = np.isin(np.arange(n), [0, 6])
    is_last = np.arange(n) == 5
    if discrete:
        action = np.eye(2)[rng.integers(0, 2, n)]
    else:
        action = rng.uniform(-1, 1, (n, 2))
    action[is_first] = 0
    state = np.column_stack([rng.uniform(-1, 1, (n, 2)), rng.uniform(-8, 20, n)])
    return schemas.transitions_frame(
        reward=rng.normal(size=n),
        is_first=is_first,
        is_last=is_last,
        is_terminal=is_last,
        action=action,
        vector_obs={"state": state},
        step=np.arange(100, 100 + n),
    )


def _validate_transitions(df: pd.DataFrame, discrete: bool) -> pd.DataFrame:
    return schemas.validate_transitions(df, SOURCE, 2, discrete, STATE, LOW, HIGH)


def _fails(call, *needles: str) -> str:
    with pytest.raises(DataValidationError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    return message


def _set(df: pd.DataFrame, column: str, row: int, value) -> pd.DataFrame:
    df = df.copy()
    df.loc[row, column] = value
    return df


@pytest.mark.parametrize("discrete", [False, True])
def test_good_transitions_pass(discrete):
    df = _transitions(discrete)
    assert _validate_transitions(df, discrete).equals(df)
    assert list(df.columns[:6]) == [
        "step",
        "stream",
        "reward",
        "is_first",
        "is_last",
        "is_terminal",
    ]
    assert list(df.columns[6:]) == ["action_0", "action_1", *STATE]


def test_episode_starts_are_checked_per_stream():
    """Two envs' steps in runs: the row after env 0's episode end continues env 1's episode
    (fine); env 1's first row must start an episode, and so must env 0's row after its end."""
    stream = np.array([0, 0, 1, 1, 0, 1])
    is_first = np.array([True, False, True, False, True, False])
    is_last = np.array([False, True, False, False, False, False])
    df = schemas.transitions_frame(
        np.zeros(6), is_first, is_last, np.zeros(6, bool), np.zeros((6, 2)), stream=stream
    )
    schemas.validate_transitions(df, SOURCE, 2, False)
    _fails(
        lambda: schemas.validate_transitions(_set(df, "is_first", 2, False), SOURCE, 2, False),
        "column 'is_first'",
        "rows [2]",
    )
    _fails(
        lambda: schemas.validate_transitions(_set(df, "is_first", 4, False), SOURCE, 2, False),
        "column 'is_first'",
        "rows [4]",
    )


@pytest.mark.parametrize(
    "discrete, corrupt, column, detail",
    [
        (False, lambda d: _set(d, "reward", 3, np.nan), "reward", "non-finite values at rows [3]"),
        (False, lambda d: _set(d, "reward", 7, np.inf), "reward", "non-finite values at rows [7]"),
        (False, lambda d: d.assign(is_last=d.is_last.astype(int)), "is_last", "expected boolean"),
        (False, lambda d: _set(d, "is_first", 0, False), "is_first", "rows [0]"),
        (False, lambda d: _set(d, "is_first", 6, False), "is_first", "rows [6]"),
        (False, lambda d: _set(d, "is_terminal", 8, True), "is_terminal", "rows [8]"),
        (False, lambda d: _set(d, "action_1", 4, 1.5), "action_1", "outside [-1, 1] at rows [4]"),
        (False, lambda d: _set(d, "action_0", 2, np.nan), "action_0", "non-finite"),
        (True, lambda d: _set(d, "action_0", 2, 0.5), "action_0", "other than 0 and 1"),
        (True, lambda d: d.assign(action_0=0.0, action_1=0.0), "action_0..action_1", "one-hot"),
        (
            True,
            lambda d: _set(_set(d, "action_0", 0, 1.0), "action_1", 0, 1.0),
            "action_0..action_1",
            "one-hot (all zeros allowed only at is_first) at rows [0]",
        ),
        (False, lambda d: _set(d, "obs/state_1", 9, -1.5), "obs/state_1", "outside [-1, 1]"),
        (False, lambda d: _set(d, "obs/state_2", 9, -9.0), "obs/state_2", "below -8 at rows [9]"),
        (False, lambda d: _set(d, "obs/state_2", 1, np.inf), "obs/state_2", "non-finite"),
        (False, lambda d: d.drop(columns=["obs/state_0"]), "obs/state_0", "is missing"),
        (False, lambda d: _set(d, "step", 4, 102), "step", "not strictly increasing at rows [4]"),
        (False, lambda d: _set(d, "step", 0, -1), "step", "below 0 at rows [0]"),
        (False, lambda d: d.assign(step=d.step.astype(float)), "step", "dtype float64"),
    ],
)
def test_broken_transitions_name_source_and_column(discrete, corrupt, column, detail):
    df = corrupt(_transitions(discrete))
    _fails(lambda: _validate_transitions(df, discrete), f"{SOURCE}: ", f"column '{column}'", detail)


@pytest.mark.parametrize(
    "column, values, dtype",
    [
        ("reward", lambda d: np.arange(len(d)), "float64"),
        ("reward", lambda d: d.reward.astype(np.float32), "float64"),
        ("step", lambda d: d.step.astype(np.int32), "int64"),
        ("stream", lambda d: d.stream.astype(np.uint8), "int64"),
    ],
)
def test_integers_and_narrow_widths_are_cast_to_the_column_dtype(column, values, dtype):
    df = _transitions(False)
    df[column] = values(df)
    out = _validate_transitions(df, False)
    assert out[column].dtype == dtype and df[column].dtype != dtype  # the input is left alone
    np.testing.assert_array_equal(out[column], df[column])


@pytest.mark.parametrize(
    "column, value, kind",
    [
        ("reward", "1.5", "number"),  # pandera's coerce=True would read these as numbers
        ("reward", True, "number"),
        ("action_0", "a", "number"),
        ("step", 100.5, "integer"),  # coerce=True would cast this to 100
        ("is_last", 0.5, "boolean"),  # ... and 0.5 to True
        ("is_first", 1, "boolean"),
    ],
)
def test_nothing_else_is_cast_and_a_mistyped_column_is_reported_once(column, value, kind):
    df = _transitions(False).assign(**{column: value})
    message = _fails(lambda: _validate_transitions(df, False))
    assert message == f"{SOURCE}: column '{column}' has dtype {df[column].dtype}, expected {kind}"


def test_unbounded_observations_are_only_checked_for_finiteness():
    df = _set(_transitions(False), "obs/state_2", 3, 1e6)  # high bound is +inf
    _validate_transitions(df, False)
    schemas.validate_transitions(df.assign(**{"obs/state_0": 5.0}), SOURCE, 2, False, STATE)


def test_transitions_by_column_bounds():
    df = _transitions(False)
    with pytest.raises(DataValidationError, match="'obs/state_0' has values above 0.5"):
        schemas.validate_transitions(df, SOURCE, 2, False, STATE, obs_high={"obs/state_0": 0.5})


def test_all_problems_are_summarised_on_one_line():
    df = _set(_set(_transitions(False), "reward", 2, np.nan), "action_0", 3, 9.0)
    message = _fails(lambda: _validate_transitions(df, False), "reward", "and 1 more", "action_0")
    assert message.index("reward") < message.index("action_0")


# --- episodes -------------------------------------------------------------------------------------
def _episodes() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "episode": [0, 1, 2, 3],
            "seed": [7, 7, 7, 7],
            "return": [-1200.5, -900.0, -350.25, -120.0],
            "length": [200, 200, 200, 200],
            "env_step": [200, 400, 600, 800],
            "stage": ["train"] * 4,
        }
    )


def test_good_episodes_pass_also_after_a_csv_round_trip(tmp_path):
    df = _episodes()
    schemas.validate_episodes(df, "x")
    schemas.validate_episodes(df.drop(columns=["stage"]), "x")
    schemas.validate_train_returns(df, "x")
    path = tmp_path / "returns.csv"
    df.to_csv(path, index=False)
    back = schemas.read_csv(path, schemas.validate_train_returns)
    assert back.equals(pd.read_csv(path))
    empty = tmp_path / "empty.csv"
    df.iloc[:0].to_csv(empty, index=False)
    back = schemas.read_csv(empty, schemas.validate_train_returns)  # object columns, cast
    assert len(back) == 0 and back.dtypes["episode"] == "int64"


@pytest.mark.parametrize(
    "corrupt, column, detail",
    [
        (lambda d: _set(d, "return", 2, np.nan), "return", "non-finite values at rows [2]"),
        (lambda d: _set(d, "length", 1, 0), "length", "<= 0 at rows [1]"),
        (lambda d: _set(d, "episode", 3, 2), "episode", "duplicate values at rows [2, 3]"),
        (lambda d: _set(d, "episode", 0, -1), "episode", "below 0"),
        (lambda d: d.drop(columns=["seed"]), "seed", "is missing"),
        (lambda d: d.assign(seed=[0.5, 1, 2, 3]), "seed", "expected integer"),
        (lambda d: _set(d, "env_step", 0, -5), "env_step", "below 0"),
        (lambda d: d.assign(stage=[1, 2, 3, 4]), "stage", "expected string"),
    ],
)
def test_broken_episodes_name_source_and_column(corrupt, column, detail):
    df = corrupt(_episodes())
    source = "metrics/eval/episodes.csv"
    _fails(lambda: schemas.validate_episodes(df, source), f"{source}: column '{column}'", detail)


def test_train_returns_need_non_decreasing_env_step():
    df = _set(_episodes(), "env_step", 2, 300)
    schemas.validate_episodes(df, "eval")  # evaluation episodes may share or repeat env steps
    _fails(
        lambda: schemas.validate_train_returns(df, "metrics/train/returns.csv"),
        "metrics/train/returns.csv: column 'env_step' decreases at rows [2]",
    )


# --- training losses ------------------------------------------------------------------------------
def _losses(n: int = 8) -> pd.DataFrame:
    steps = np.arange(n)
    return pd.DataFrame(
        {
            "gradient_step": steps * 50,
            "env_step": 1000 + steps * 100,
            "wall_seconds": steps * 2.5,
            "updates_per_second": np.full(n, 20.0),
            "skipped_updates": np.zeros(n, np.int64),
            "loss/reconstruction": np.linspace(3, 1, n),
            "loss/reward": np.linspace(2, 0.1, n),
            "actor/entropy": np.r_[np.nan, np.ones(n - 1)],  # not every metric exists on row 0
        }
    )


def test_good_losses_pass():
    schemas.validate_train_losses(_losses(), "metrics/train/losses.csv")
    schemas.validate_train_losses(_losses().drop(columns=["actor/entropy"]), "x")


@pytest.mark.parametrize(
    "corrupt, column, detail",
    [
        (
            lambda d: _set(d, "loss/reward", 3, np.nan),
            "loss/reward",
            "non-finite values at rows [3]",
        ),
        (
            lambda d: _set(_set(d, "loss/reward", 3, np.inf), "loss/reward", 7, -np.inf),
            "loss/reward",
            "non-finite values at rows [3, 7]",
        ),
        (lambda d: _set(d, "gradient_step", 2, 50), "gradient_step", "not strictly increasing"),
        (lambda d: _set(d, "env_step", 5, 0), "env_step", "decreases at rows [5]"),
        (lambda d: _set(d, "wall_seconds", 1, -1.0), "wall_seconds", "below 0"),
        (lambda d: _set(d, "updates_per_second", 4, np.nan), "updates_per_second", "non-finite"),
        (lambda d: _set(d, "actor/entropy", 6, np.inf), "actor/entropy", "infinite values"),
        (lambda d: d.drop(columns=["wall_seconds"]), "wall_seconds", "is missing"),
        (lambda d: _set(d, "skipped_updates", 2, -1), "skipped_updates", "below 0"),
        (lambda d: d.assign(**{"loss/kl": ["a"] * len(d)}), "loss/kl", "expected number"),
    ],
)
def test_broken_losses_name_source_and_column(corrupt, column, detail):
    df = corrupt(_losses())
    source = "metrics/train/losses.csv"
    _fails(
        lambda: schemas.validate_train_losses(df, source), f"{source}: column '{column}'", detail
    )


def test_error_keeps_failure_cases_and_schema_error_cause():
    df = _set(_losses(), "loss/reward", 3, np.nan)
    with pytest.raises(DataValidationError) as info:
        schemas.validate_train_losses(df, "losses.csv")
    assert isinstance(info.value, ValueError)
    assert info.value.problems == ["column 'loss/reward' has non-finite values at rows [3]"]
    assert type(info.value.__cause__).__name__ == "SchemaErrors"
    assert len(info.value.failure_cases) >= 1

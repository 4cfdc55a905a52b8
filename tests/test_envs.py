"""Tests for the gymnasium adapter: specs, observation and action conversion, errors."""

from __future__ import annotations

import sys

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

from dreamer import envs as envs_module
from dreamer.config import EnvConfig
from dreamer.env_pool import make_envs
from dreamer.envs import (
    DreamerEnv,
    EnvSpec,
    EnvSpecError,
    env_spec_of,
    make_env,
    resize_image,
)

DICT_OBS_SPACE = spaces.Dict(
    {
        "image": spaces.Box(0, 255, (32, 32, 3), np.uint8),
        "state": spaces.Box(-1.0, 1.0, (3,), np.float32),
    }
)


def _constant_obs(space: spaces.Space, value: int):
    """An observation filled with ``value`` everywhere (a dict for Dict spaces)."""
    if isinstance(space, spaces.Dict):
        return {key: _constant_obs(sub, value) for key, sub in space.items()}
    return np.full(space.shape, value, dtype=space.dtype)


class ConfigurableEnv(gymnasium.Env):
    """Tiny env with chosen spaces: obs at step t is filled with t, reward at step t is t."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(
        self, observation_space=None, action_space=None, episode_length=5, render_mode=None
    ):
        self.observation_space = observation_space or spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.action_space = action_space or spaces.Discrete(2)
        self.episode_length = episode_length
        self.render_mode = render_mode
        self.received_actions = []
        self.step_count = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.step_count = 0
        return _constant_obs(self.observation_space, 0), {}

    def step(self, action):
        self.received_actions.append(action)
        self.step_count += 1
        terminated = self.step_count >= self.episode_length
        obs = _constant_obs(self.observation_space, self.step_count)
        return obs, float(self.step_count), terminated, False, {}

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return np.full((10, 20, 3), self.step_count, np.uint8)


class NoRenderEnv(ConfigurableEnv):
    metadata = {"render_modes": []}


def _register(env_id: str, entry_point, **kwargs) -> None:
    if env_id not in gymnasium.registry:
        gymnasium.register(id=env_id, entry_point=entry_point, disable_env_checker=True, **kwargs)


_register("tests/Configurable-v0", ConfigurableEnv)
_register("tests/NoRender-v0", NoRenderEnv)
_register("tests/DictObs-v0", ConfigurableEnv, kwargs={"observation_space": DICT_OBS_SPACE})


def _configurable(**kwargs) -> EnvConfig:
    return EnvConfig(id="tests/Configurable-v0", kwargs=kwargs)


def _inner(env: DreamerEnv) -> ConfigurableEnv:
    return env.gym_env.unwrapped


# --- real environments ---------------------------------------------------------------------------
def test_pendulum_spec_and_action_rescaling():
    with make_env(EnvConfig(id="Pendulum-v1"), seed=0) as env:
        assert env.spec == EnvSpec(
            obs_shapes={"vector": (3,)},
            image_keys=(),
            vector_keys=("vector",),
            action_dim=1,
            discrete=False,
            action_low=(-2.0,),
            action_high=(2.0,),
            env_id="Pendulum-v1",
        )
        obs = env.reset()
        assert obs["vector"].dtype == np.float32 and obs["vector"].shape == (3,)
        # Pendulum records the torque it applied in ``last_u``.
        for agent_action, torque in [(1.0, 2.0), (-1.0, -2.0), (0.0, 0.0), (0.5, 1.0), (3.0, 2.0)]:
            env.step(np.array([agent_action], np.float32))
            assert env.gym_env.unwrapped.last_u == pytest.approx(torque)
        action = env.random_action()
        assert action.dtype == np.float32 and action.shape == (1,) and -1 <= action[0] <= 1
        ((low, high),) = env.vector_bounds().values()
        assert low.tolist() == [-1, -1, -8] and high.tolist() == [1, 1, 8]


def test_cartpole_one_hot_actions_push_the_cart():
    cfg = EnvConfig(id="CartPole-v1")
    assert env_spec_of(cfg).discrete and env_spec_of(cfg).action_dim == 2
    velocities = []
    for one_hot in ([1.0, 0.0], [0.0, 1.0]):
        with make_env(cfg, seed=3) as env:
            assert env.spec.action_low is None and env.spec.action_high is None
            env.reset()
            obs, reward, terminated, truncated = env.step(np.array(one_hot, np.float32))
            velocities.append(obs["vector"][1])  # cart velocity
            assert reward == 1.0 and not terminated and not truncated
    assert velocities[0] < 0 < velocities[1]  # action 0 pushes left, 1 right
    with make_env(cfg, seed=0) as env:
        for _ in range(10):
            action = env.random_action()
            assert action.dtype == np.float32 and sorted(action.tolist()) == [0.0, 1.0]


def test_carracing_reset_and_step_give_resized_images():
    with make_env(EnvConfig(id="CarRacing-v3"), seed=0) as env:
        assert env.spec.obs_shapes == {"image": (64, 64, 3)}
        assert env.spec.image_keys == ("image",) and env.spec.vector_keys == ()
        assert env.spec.action_low == (-1.0, 0.0, 0.0) and env.spec.action_high == (1.0, 1.0, 1.0)
        obs = env.reset()
        assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
        obs, _, _, _ = env.step(np.array([0.0, 1.0, -1.0], np.float32))
        assert obs["image"].shape == (64, 64, 3)
        frame = env.render()
        assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8


def test_discrete_carracing_through_env_kwargs():
    with make_env(EnvConfig(id="CarRacing-v3", kwargs={"continuous": False}), seed=0) as env:
        assert env.spec.discrete and env.spec.action_dim == 5
        assert env.spec.obs_shapes == {"image": (64, 64, 3)}
        env.reset()
        obs, _, _, _ = env.step(np.eye(5, dtype=np.float32)[3])  # gas
        assert obs["image"].shape == (64, 64, 3)


# --- custom environments --------------------------------------------------------------------------
def test_dict_observation_space_keeps_sub_space_names():
    with make_env(EnvConfig(id="tests/DictObs-v0"), seed=0) as env:
        assert env.spec.obs_shapes == {"image": (64, 64, 3), "state": (3,)}
        assert env.spec.image_keys == ("image",) and env.spec.vector_keys == ("state",)
        assert env.spec.discrete and env.spec.action_dim == 2
        assert set(env.vector_bounds()) == {"state"}
        obs = env.reset()
        obs, _, _, _ = env.step(np.array([1.0, 0.0], np.float32))
        assert obs["image"].dtype == np.uint8 and np.all(obs["image"] == 1)
        assert obs["state"].dtype == np.float32 and np.all(obs["state"] == 1.0)


@pytest.mark.parametrize("shape, expected", [((96, 96, 3), (64, 64, 3)), ((40, 50), (64, 64, 1))])
def test_images_are_resized(shape, expected):
    cfg = _configurable(observation_space=spaces.Box(0, 255, shape, np.uint8))
    with make_env(cfg, seed=0) as env:
        assert env.spec.obs_shapes == {"image": expected}
        env.reset()
        obs, _, _, _ = env.step(np.array([1.0, 0.0], np.float32))
        assert obs["image"].shape == expected and np.all(obs["image"] == 1)


def test_image_size_option():
    cfg = EnvConfig(id="tests/DictObs-v0", image_size=16)
    assert env_spec_of(cfg).obs_shapes["image"] == (16, 16, 3)


def test_resize_image_averages_areas():
    image = np.random.default_rng(0).integers(0, 256, (128, 96, 3), dtype=np.uint8)
    halved = resize_image(image[:, :64], 32)  # exact 4×2 blocks
    blocks = image[:, :64].astype(np.float64).reshape(32, 4, 32, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(halved, np.rint(blocks), atol=1)
    same = resize_image(image[:64, :64], 64)
    np.testing.assert_array_equal(same, image[:64, :64])


def test_vector_observations_are_flattened_to_float32():
    cfg = _configurable(observation_space=spaces.Box(-5, 5, (2, 3), np.int64))
    with make_env(cfg, seed=0) as env:
        assert env.spec.obs_shapes == {"vector": (6,)}
        obs = env.reset()
        assert obs["vector"].dtype == np.float32 and obs["vector"].shape == (6,)


def test_box_actions_rescale_and_reshape():
    low = np.array([[-2.0, 0.0], [1.0, 5.0]], np.float32)
    space = spaces.Box(low, np.array([[2.0, 10.0], [3.0, 5.0]], np.float32))
    with make_env(_configurable(action_space=space), seed=0) as env:
        assert env.spec.action_dim == 4 and not env.spec.discrete
        assert env.spec.action_low == (-2.0, 0.0, 1.0, 5.0)
        env.reset()
        env.step(np.array([1.0, 1.0, 1.0, 1.0], np.float32))
        env.step(np.array([-1.0, -1.0, -1.0, -1.0], np.float32))
        env.step(np.array([0.0, 0.5, -5.0, 0.0], np.float32))  # out of range is clipped
        high, low, mixed = _inner(env).received_actions
        np.testing.assert_allclose(high, [[2.0, 10.0], [3.0, 5.0]])
        np.testing.assert_allclose(low, [[-2.0, 0.0], [1.0, 5.0]])
        np.testing.assert_allclose(mixed, [[0.0, 7.5], [1.0, 5.0]])
        assert high.dtype == space.dtype
        for _ in range(20):
            action = env.random_action()
            assert action.shape == (4,) and np.all(np.abs(action) <= 1)
            assert action[3] == 0.0  # a dimension with low == high maps to 0


def test_discrete_actions_use_argmax_plus_start():
    with make_env(_configurable(action_space=spaces.Discrete(3, start=-1)), seed=0) as env:
        assert env.spec.action_dim == 3
        env.reset()
        for one_hot in ([0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.1, 0.7, 0.2]):
            env.step(np.array(one_hot, np.float32))
        assert _inner(env).received_actions == [1, -1, 0]
        counts = np.sum([env.random_action() for _ in range(60)], axis=0)
        assert counts.sum() == 60 and np.all(counts > 0)


def test_action_repeat_sums_rewards_and_stops_at_episode_end():
    cfg = EnvConfig(id="tests/Configurable-v0", action_repeat=3)
    with make_env(cfg, seed=0) as env:
        env.reset()
        action = np.array([1.0, 0.0], np.float32)
        obs, reward, terminated, truncated = env.step(action)
        assert reward == 1 + 2 + 3 and not terminated and np.all(obs["vector"] == 3)
        obs, reward, terminated, truncated = env.step(action)
        assert reward == 4 + 5 and terminated and not truncated
        assert _inner(env).step_count == 5
        with pytest.raises(RuntimeError, match="call reset"):
            env.step(action)


def test_step_rejects_wrong_action_shape():
    with make_env(_configurable(), seed=0) as env:
        env.reset()
        with pytest.raises(ValueError, match=r"expected shape \(2,\)"):
            env.step(np.zeros(3, np.float32))


def test_render_mode_rgb_array_is_requested_when_supported():
    with make_env(_configurable(), seed=0) as env:
        assert env.gym_env.render_mode == "rgb_array"
        env.reset()
        env.step(np.array([1.0, 0.0], np.float32))
        frame = env.render()
        assert frame.shape == (10, 20, 3) and frame.dtype == np.uint8 and np.all(frame == 1)
    with make_env(EnvConfig(id="tests/NoRender-v0"), seed=0) as env:
        assert env.gym_env.render_mode is None and env.render() is None
    with make_env(_configurable(render_mode=None), seed=0) as env:  # explicit kwargs win
        assert env.gym_env.render_mode is None


def test_make_envs_seeds_each_env_differently():
    with make_envs(EnvConfig(id="Pendulum-v1", num_envs=2), seed=5) as envs:
        assert envs.num_envs == 2 and envs.spec.obs_shapes == {"vector": (3,)}
        first, second = envs.reset(np.array([True, True]))["vector"]
        assert not np.array_equal(first, second)
    with make_env(EnvConfig(id="Pendulum-v1"), seed=6) as alone:  # env 1 is seeded 5 + 1
        assert np.array_equal(alone.reset()["vector"], second)


# --- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"action_space": spaces.MultiDiscrete([3, 3])},
            "tests/Configurable-v0: unsupported action space MultiDiscrete([3 3]); "
            "supported: Discrete, bounded Box",
        ),
        (
            {"action_space": spaces.Box(-np.inf, np.inf, (2,), np.float32)},
            "tests/Configurable-v0: unsupported action space Box(-inf, inf, (2,), float32); "
            "supported: Discrete, bounded Box",
        ),
        (
            {"action_space": spaces.MultiBinary(4)},
            "tests/Configurable-v0: unsupported action space MultiBinary(4)",
        ),
        (
            {"observation_space": spaces.Text(5)},
            "tests/Configurable-v0: unsupported observation space Text(",
        ),
        (
            {"observation_space": spaces.Discrete(4)},
            "tests/Configurable-v0: unsupported observation space Discrete(4)",
        ),
        (
            {"observation_space": spaces.Dict({"inner": DICT_OBS_SPACE})},
            "tests/Configurable-v0: unsupported observation space Dict(",
        ),
    ],
)
def test_unsupported_spaces_are_rejected_in_one_line(kwargs, message):
    with pytest.raises(EnvSpecError) as error:
        make_env(_configurable(**kwargs), seed=0)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_nested_dict_error_names_the_key():
    with pytest.raises(EnvSpecError, match="at key 'inner'"):
        env_spec_of(_configurable(observation_space=spaces.Dict({"inner": DICT_OBS_SPACE})))


def test_unknown_env_id():
    with pytest.raises(EnvSpecError) as error:
        make_env(EnvConfig(id="Foo-v0"), seed=0)
    assert str(error.value).startswith("env.id: unknown gymnasium environment 'Foo-v0'")
    assert isinstance(error.value, ValueError) and "\n" not in str(error.value)


def test_bad_kwargs_are_reported():
    with pytest.raises(EnvSpecError, match=r"^env.kwargs: not accepted by 'Pendulum-v1'"):
        make_env(EnvConfig(id="Pendulum-v1", kwargs={"bogus": 1}), seed=0)


def test_ids_registered_on_import_resolve(monkeypatch):
    """``module:EnvId`` imports the module first; a plain id of a namespace that some package
    registers on import (dm_control/… by shimmy) imports that package first."""
    with make_env(EnvConfig(id="tests.registers_on_import:OnImport/Pendulum-v0"), seed=0) as env:
        assert env.spec.action_dim == 1
    gymnasium.registry.pop("OnImport/Pendulum-v0")
    sys.modules.pop("tests.registers_on_import")
    monkeypatch.setitem(envs_module.NAMESPACE_PACKAGES, "OnImport", "tests.registers_on_import")
    # an unknown name in a namespace that only the import registers: still one line
    with pytest.raises(
        EnvSpecError, match=r"^env.id: unknown gymnasium environment 'OnImport/Nope-v0'"
    ):
        make_env(EnvConfig(id="OnImport/Nope-v0"), seed=0)
    with make_env(EnvConfig(id="OnImport/Pendulum-v0"), seed=0) as env:
        assert env.spec.action_dim == 1
    with pytest.raises(
        EnvSpecError, match=r"^env.id: unknown gymnasium namespace in 'Nowhere/X-v0'"
    ):
        make_env(EnvConfig(id="Nowhere/X-v0"), seed=0)
    with pytest.raises(
        EnvSpecError,
        match=r"^env.id: module 'no_such_module' of 'no_such_module:X-v0' is not installed",
    ):
        make_env(EnvConfig(id="no_such_module:X-v0"), seed=0)


def test_deepmind_control_by_plain_id_renders_headless():
    """dm_control/… ids work before anything imported shimmy; frames render without a display."""
    with make_env(EnvConfig(id="dm_control/cartpole-balance-v0"), seed=0) as env:
        assert env.spec.obs_shapes == {"position": (3,), "velocity": (2,)}
        assert env.spec.action_dim == 1 and not env.spec.discrete
        obs = env.reset()
        assert obs["position"].dtype == np.float32
        obs, reward, terminated, truncated = env.step(np.zeros(1, np.float32))
        assert 0.0 <= reward <= 1.0 and not terminated
        frame = env.render()
        assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8 and frame.std() > 0

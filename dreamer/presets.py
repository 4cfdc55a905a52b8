"""Presets: model sizes (``model.size``) and per-environment settings (``params.yaml``'s
``presets`` block), and how the env preset is merged over the file's top-level values.

Environment presets, keyed by gymnasium id, hold the settings a task needs beyond the defaults;
the one named by ``env.id`` is merged over the top-level values, so ``dvc exp run -S
env.id=CartPole-v1`` picks up CartPole's settings by itself. A top-level value that the preset
would silently replace is refused instead (see :func:`apply_env_preset`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import ConfigError

# --- model size presets ---------------------------------------------------------------------------
# deter: GRU width; hidden: width of the RSSM's input/prior/posterior layers; units: MLP width of
# encoder/decoder/heads; stoch × classes: categorical latents; depth: CNN base channels;
# blocks: groups of the block-diagonal GRU; layers: MLP depth of encoder/decoder/actor/critic.
MODEL_PRESETS: dict[str, dict[str, int]] = {
    # tiny, for tests (danijar's `debug` config)
    "debug": dict(deter=16, hidden=16, units=16, stoch=4, classes=4, depth=4, blocks=2, layers=1),
    # official current sizes (configs.yaml: size1m, size12m, size25m, size50m)
    "size1m": dict(
        deter=512, hidden=64, units=64, stoch=32, classes=4, depth=4, blocks=8, layers=3
    ),
    "size12m": dict(
        deter=2048, hidden=256, units=256, stoch=32, classes=16, depth=16, blocks=8, layers=3
    ),
    "size25m": dict(
        deter=3072, hidden=384, units=384, stoch=32, classes=24, depth=24, blocks=8, layers=3
    ),
    "size50m": dict(
        deter=4096, hidden=512, units=512, stoch=32, classes=32, depth=32, blocks=8, layers=3
    ),
    # paper v1 (arXiv 2301.04104, table of model sizes); classes 32, 8 GRU blocks
    "XS": dict(
        deter=256, hidden=256, units=256, stoch=32, classes=32, depth=24, blocks=8, layers=2
    ),
    "S": dict(deter=512, hidden=512, units=512, stoch=32, classes=32, depth=32, blocks=8, layers=2),
    "M": dict(
        deter=1024, hidden=640, units=640, stoch=32, classes=32, depth=48, blocks=8, layers=3
    ),
    "L": dict(
        deter=2048, hidden=768, units=768, stoch=32, classes=32, depth=64, blocks=8, layers=4
    ),
}


# --- env presets ----------------------------------------------------------------------------------
def _merge(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` merged in recursively (nested mappings merge, values replace)."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "kwargs":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _refuse_overridden(data: dict, preset: dict, where: str, defaults: dict, key: str = ""):
    """Raise if ``preset`` (at ``where``) would replace a value of ``data`` that differs from both
    its default and the preset's, i.e. one the user chose. Recursion as in :func:`_merge`."""
    for name, value in preset.items():
        mine, dotted = data.get(name), f"{key}{name}"
        if isinstance(value, dict) and isinstance(mine, dict) and name != "kwargs":
            _refuse_overridden(mine, value, where, defaults.get(name, {}), dotted + ".")
        elif mine is not None and mine != value and mine != defaults.get(name):
            raise ConfigError(
                f"{dotted}: {mine!r} is overridden by {where}.{dotted} ({value!r}); "
                "set that key instead"
            )


def apply_env_preset(
    data: dict, validate: Callable[[Any, str], Any], sections: set[str], defaults: dict
) -> dict:
    """Validate every entry of ``data["presets"]`` and merge the one for ``env.id`` into ``data``.

    A preset is a partial params file (``{"training": {"train_ratio": 128.0}}``); its keys and
    values are checked like the top level's, with errors naming ``presets.<id>.<key>``. A preset
    value replaces the top-level value only where that is unset or at its default; a top-level
    value that differs from both is refused with the preset key to set instead, since
    ``dvc exp run -S env.id=CarRacing-v3 -S training.env_steps=300`` silently ran the preset's
    12,000 steps. (A top-level value equal to its default reads as unset: the preset's wins.)

    A namespaced id ``ns/name`` (``dm_control/cartpole-balance-v0``) has its preset nested under
    ``presets.ns.name``, since ``dvc exp run -S`` cannot address a key containing ``/``.

    Args:
        data: the params file's data (not modified).
        validate: the config validator, ``validate(partial data, "presets.<id>.")``, which raises
            a :class:`ConfigError` naming the key (passed in: the config module builds on this one).
        sections: the params file's top-level blocks (``env``, ``training``, …).
        defaults: the built-in defaults as a nested dict.
    """
    data = dict(data)
    presets = data.pop("presets", None) or {}
    if not isinstance(presets, dict):
        raise ConfigError(f"presets: expected a mapping from env id to settings, got {presets!r}")
    entries = _preset_entries(presets, sections)
    for where, preset in entries.values():
        if not isinstance(preset, dict):
            raise ConfigError(f"{where}: expected a mapping, got {preset!r}")
        validate(preset, where + ".")  # keys, types and ranges, named inside the preset
        if "id" in (preset.get("env") or {}):
            raise ConfigError(f"{where}.env.id: a preset cannot change the env id")
    env = data.get("env")
    env_id = (env if isinstance(env, dict) else {}).get("id", defaults["env"]["id"])
    if env_id not in entries:
        return data
    where, preset = entries[env_id]
    _refuse_overridden(data, preset, where, defaults)
    return _merge(data, preset)


def _preset_entries(presets: dict, sections: set[str]) -> dict[str, tuple[str, Any]]:
    """``{env id: (dotted key, preset)}``. A block whose keys are not params sections (``env``,
    ``training``, …) but whose entries have them is a namespace: the presets of ``<key>/<name>``."""

    def is_preset(value) -> bool:
        return isinstance(value, dict) and bool(sections & set(value))

    entries = {}
    for key, value in presets.items():
        if (
            isinstance(value, dict)
            and not is_preset(value)
            and any(is_preset(v) for v in value.values())
        ):
            for name, preset in value.items():
                entries[f"{key}/{name}"] = (f"presets.{key}.{name}", preset)
        else:
            entries[str(key)] = (f"presets.{key}", value)
    return entries

"""Reward functions written as for the DeepRacer console: a Python file defining

    def reward_function(params) -> float

called after every step with DeepRacer's documented `params` (see `RaceEnv.params`), so a
function written for the console runs here unchanged. A file that is missing, does not
define the function, raises, or returns something that is not a finite number stops the
job with one line naming the file, the line and the step's params.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

#: The reward a run uses when it is given none (docs/families.md explains it).
DEFAULT_REWARD = Path(__file__).with_name("default_reward.py")
#: Params left out of an error message: long, and the same at every step.
_LONG = {"waypoints"}


class RewardError(ValueError):
    """The reward function can't be used; the message says where and why."""


def _shown(params: Mapping[str, Any]) -> str:
    shown = {k: (round(v, 4) if isinstance(v, float) else v)
             for k, v in params.items() if k not in _LONG}
    return repr(shown)


class RewardFunction:
    """A user's `reward_function`, loaded from ``path`` and checked at every call."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.source = self.path.name
        if not self.path.is_file():
            raise RewardError(f"reward function {self.path}: no such file; give a Python file "
                              f"defining reward_function(params)")
        module = self._load()
        function = getattr(module, "reward_function", None)
        if not callable(function):
            raise RewardError(f"{self.source}: defines no reward_function(params); add "
                              f"'def reward_function(params): ... return float(reward)'")
        self.function: Callable[[dict[str, Any]], Any] = function

    def _load(self) -> ModuleType:
        name = f"genkiln_reward_{abs(hash(str(self.path.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, self.path)
        if spec is None or spec.loader is None:
            raise RewardError(f"{self.source}: not a Python file")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except SyntaxError as exc:
            raise RewardError(f"{self.source}, line {exc.lineno}: {exc.msg}") from None
        except Exception as exc:
            raise RewardError(f"{self.source}, line {self._line(exc)}: loading it raised "
                              f"{type(exc).__name__}: {exc}") from None
        return module

    def _line(self, exc: BaseException) -> int | str:
        """The line of the user's file the exception came from (its innermost frame)."""
        resolved = str(self.path.resolve())
        lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__)
                 if str(Path(f.filename).resolve()) == resolved]
        return lines[-1] if lines and lines[-1] is not None else "?"

    def _returning_line(self, params: dict[str, Any]) -> int | str:
        """Call the function again, tracing it, for the line its bad value was returned on."""
        resolved = str(self.path.resolve())
        line: int | str = "?"

        def trace(frame: FrameType, event: str, _: Any) -> None:
            nonlocal line
            if event == "return" and frame.f_code.co_filename in (resolved, str(self.path)):
                line = frame.f_lineno

        previous = sys.getprofile()
        sys.setprofile(trace)
        try:
            self.function(dict(params))
        except Exception:
            pass
        finally:
            sys.setprofile(previous)
        return line

    def __call__(self, params: dict[str, Any]) -> float:
        try:
            value = self.function(params)
        except Exception as exc:
            raise RewardError(f"{self.source}, line {self._line(exc)}: reward_function raised "
                              f"{type(exc).__name__}: {exc} (params: {_shown(params)})"
                              ) from None
        number = value if isinstance(value, int | float) and not isinstance(value, bool) \
            else None
        if number is None or not math.isfinite(number):
            raise RewardError(f"{self.source}, line {self._returning_line(params)}: "
                              f"reward_function returned {value!r}; it must return a finite "
                              f"number (params: {_shown(params)})")
        return float(number)


def load_reward(path: Path | None) -> RewardFunction:
    """The reward function in ``path`` (a file, or a folder holding one .py file), or the
    default one."""
    if path is None:
        return RewardFunction(DEFAULT_REWARD)
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.py"))
        if len(files) != 1:
            raise RewardError(f"{path}: a reward channel holds one Python file defining "
                              f"reward_function(params); found {len(files)} "
                              f"({', '.join(p.name for p in files) or 'none'})")
        path = files[0]
    return RewardFunction(path)

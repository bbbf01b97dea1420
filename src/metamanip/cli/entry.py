"""The one error path and the compose-time checks every Hydra entry point shares.

    @entry_point("train")          # instead of @hydra.main(version_base="1.3", config_path=..., config_name="train")
    def main(cfg: DictConfig) -> float | None: ...

- A user error (`metamanip.errors.UserError`, a Hydra composition error, a mandatory `???` value left unset,
  or a ValueError / FileNotFoundError / KeyError / TypeError that metamanip code raises on purpose with a
  message) prints `error: <what> — <how to fix>` on stderr, one line, and exits 2. Anything else is a bug:
  its traceback is printed and the exit status is 1. `--debug` (taken off the command line) or
  `HYDRA_FULL_ERROR=1` prints the traceback of a user error too, before the same line.
- Before the job body runs, the composed config goes through `metamanip.cli.checks.check_config` (the
  allowed values, registered once there). In a multirun (`-m`) every element of the sweep is composed and
  checked *before* the launcher starts any job; a bad element is named (`sweep element 3 of 6
  (decoder=gpt trainer.precision=fp8): ...`).
"""
from __future__ import annotations

import functools
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

CONFIG_DIR = Path(__file__).resolve().parents[3] / "conf"
EXIT_USER_ERROR = 2
EXIT_BUG = 1
# the metamanip code whose explicit `raise ValueError(...)` etc. is a message for the user
_OUR_CODE = (str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[2] / "hydra_plugins"))
_PLAIN_USER_TYPES = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
                     KeyError, TypeError)
_HYDRA_FLAGS_WITHOUT_JOB = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion",
                            "-sc", "--resolve"}
# another primary config or search path: Hydra composes it, the sweep pre-check does not know it
_CONFIG_FLAGS = {"--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd"}


def _chain(e: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)


def _raised_on_purpose(e: BaseException) -> bool:
    """True when the innermost frame is a `raise` statement in metamanip code (a message meant for the
    user), not an error that happened inside an expression (a bug) or inside a library."""
    tb = e.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename
    if not any(filename.startswith(p) for p in _OUR_CODE):
        return False
    import linecache

    return linecache.getline(filename, tb.tb_lineno).lstrip().startswith("raise ")


def _compact(text: str) -> str:
    """Hydra's multi-line messages on one line: `what — Available options in 'env': a, b, c`."""
    text = text.split("\nConfig search path")[0]
    paras = [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    if not paras:
        return text.strip()
    first = " ".join(line.strip() for line in paras[0].splitlines())
    rest = []
    for p in paras[1:]:
        lines = [line.strip() for line in p.splitlines() if line.strip()]
        rest.append(lines[0] + " " + ", ".join(lines[1:]) if len(lines) > 1 else lines[0])
    return first + (" — " + "; ".join(rest) if rest else "")


def user_message(e: BaseException) -> str | None:
    """The one-line message of a user error, or None when `e` is a bug."""
    from hydra.errors import CompactHydraException, InstantiationException, MissingConfigException
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    from metamanip.errors import UserError

    for x in _chain(e):
        if isinstance(x, UserError):
            return str(x)
    for x in _chain(e):
        if isinstance(x, MissingMandatoryValue):
            key = getattr(x, "full_key", None) or "a value"
            return f"{key} is mandatory (??? in the config) and was not given — add {key}=<value> to the command"
        if isinstance(x, InstantiationException):
            if x.__cause__ is not None:
                continue  # judged by what the constructor raised
            return _compact(str(x))
        if isinstance(x, MissingConfigException):
            return _compact(str(x))
        if isinstance(x, (CompactHydraException, OmegaConfBaseException)):
            msg = _compact(str(x))
            if isinstance(x.__cause__, OmegaConfBaseException):
                msg += ": " + str(x.__cause__).strip().splitlines()[0]  # (not its full_key / object_type lines)
            return msg
        if isinstance(x, _PLAIN_USER_TYPES) and _raised_on_purpose(x):
            return str(x.args[0]) if isinstance(x, KeyError) and x.args else str(x)
    return None


def format_error(msg: str) -> str:
    """`error: <what> — <how to fix>` on one line (a message's first `; ` separates what from the fix)."""
    msg = " ".join(msg.split())
    if " — " not in msg and "; " in msg:
        msg = msg.replace("; ", " — ", 1)
    elif " — " not in msg:
        msg += " — check the value on the command line (`--cfg job` prints the composed config)"
    return f"error: {msg}"


def report(e: BaseException, debug: bool, stream: Any = None) -> int:
    """Print `e` as a user error (one line) or a bug (traceback); the exit status to use."""
    stream = stream or sys.stderr
    msg = user_message(e)
    if msg is None or debug:
        traceback.print_exception(type(e), e, e.__traceback__, file=stream)
    if msg is None:
        return EXIT_BUG
    print(format_error(msg), file=stream, flush=True)
    return EXIT_USER_ERROR


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _debug() -> bool:
    return _DEBUG or os.environ.get("METAMANIP_DEBUG", "") not in ("", "0")


_DEBUG = False


def run_entry_point(main: Callable[[], Any], argv: list[str] | None = None) -> Any:
    """Call a `hydra.main`-decorated `main()` through the shared error path (see the module docstring).

    `argv` (default: `sys.argv`) loses `--debug`. Hydra is told to re-raise (HYDRA_FULL_ERROR for the
    call) so that this function, not Hydra's reporter, decides between a one-line error and a traceback.
    """
    global _DEBUG
    argv = sys.argv if argv is None else argv
    debug = "--debug" in argv or os.environ.get("HYDRA_FULL_ERROR", "") not in ("", "0")
    _DEBUG = debug
    while "--debug" in argv:
        argv.remove("--debug")
    before = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        return main()
    except (SystemExit, KeyboardInterrupt, GeneratorExit):
        raise
    except BaseException as e:  # noqa: BLE001  (every error goes through the one reporter)
        sys.exit(report(e, debug))
    finally:
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


def _sweep_elements(overrides: Sequence[str]) -> list[list[str]]:
    """The job overrides of a basic sweep (`a=1,2 b=x,y` → 4 lists); non-discrete sweeps (optuna's
    `interval(...)`) are left out, their base values are checked."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    axes: list[list[str]] = []
    for o in parsed:
        if o.is_sweep_override():
            if not o.is_discrete_sweep():
                continue
            key = o.get_key_element()
            axes.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            axes.append([o.input_line])
    return [list(c) for c in itertools.product(*axes)]


def _varying(elements: list[list[str]], element: list[str]) -> str:
    """The overrides of `element` that differ between the sweep's elements (its name in a message)."""
    same = set.intersection(*(set(e) for e in elements)) if elements else set()
    return " ".join(o for o in element if o not in same) or " ".join(element)


def check_sweep(config_dir: str | os.PathLike, config_name: str, overrides: Sequence[str]) -> int:
    """Compose and check every element of a multirun before any job starts; the number of elements.
    Raises a `ConfigValueError` naming the first bad element."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from metamanip.cli.checks import check_config
    from metamanip.errors import ConfigValueError

    elements = _sweep_elements(overrides)
    was = GlobalHydra.instance().is_initialized()
    if was:  # pragma: no cover  (an entry point starts with Hydra uninitialised)
        return len(elements)
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            for i, element in enumerate(elements):
                try:
                    cfg = compose(config_name, overrides=element, return_hydra_config=True)
                    check_config(cfg)
                except Exception as e:  # noqa: BLE001
                    msg = user_message(e)
                    if msg is None:
                        raise
                    raise ConfigValueError(f"sweep element {i + 1} of {len(elements)} "
                                           f"({_varying(elements, element)}): {msg.rstrip('.')}; "
                                           "no job was launched") from e
    finally:
        GlobalHydra.instance().clear()
    return len(elements)


def entry_point(config_name: str, config_dir: str | os.PathLike = CONFIG_DIR) -> Callable[[Callable], Callable]:
    """`@hydra.main` for a metamanip entry point, with the shared error path and compose-time checks."""
    import hydra

    def decorate(task: Callable[[Any], Any]) -> Callable[..., Any]:
        @functools.wraps(task)
        def checked(cfg: Any) -> Any:
            from metamanip.cli.checks import check_config

            check_config(cfg)
            return task(cfg)

        @functools.wraps(task)
        def job(cfg: Any) -> Any:
            try:
                return checked(cfg)
            except (SystemExit, KeyboardInterrupt, GeneratorExit):
                raise
            except BaseException as e:  # noqa: BLE001
                if _in_multirun():  # the launcher records the failed job; the driver reports it
                    raise
                sys.exit(report(e, _debug()))  # a single run: reported here, not by Hydra's job runner

        hydra_main = hydra.main(version_base="1.3", config_path=str(config_dir), config_name=config_name)(job)

        @functools.wraps(task)
        def main(cfg_passthrough: Any = None) -> Any:
            if cfg_passthrough is not None:  # called with a config (tests, other code): no CLI around it
                return checked(cfg_passthrough)

            def launch() -> Any:
                args = sys.argv[1:]
                flags = {a.split("=", 1)[0] for a in args if a.startswith("-")}
                if ({"-m", "--multirun"} & flags) and not ((_HYDRA_FLAGS_WITHOUT_JOB | _CONFIG_FLAGS) & flags):
                    check_sweep(config_dir, config_name, [a for a in args if not a.startswith("-")])
                return hydra_main()

            return run_entry_point(launch)

        main.task = task  # type: ignore[attr-defined]
        return main

    return decorate

"""Job settings: one frozen dataclass per job, declared with ``models.configs.setting``; its
flags, ``--help``, preset section and launch checks all derive from it.

Order of precedence: flags given on the command line, then the ``--config`` preset's section,
then the dataclass defaults. Every refusal is a :class:`SettingsError` whose message is one line
naming the flag or file; ``beamcap`` prints it and exits 2. Nothing here imports TensorFlow, so
``--help`` and bad flags answer at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib.resources
import logging
import sys
from typing import NamedTuple

import yaml

from models import storage
from models.backend import set_tensorflow_log_level
from models.configs import SettingsError, check_ranges, flag

PRESETS = "beamcap_presets"  # configs/, installed as package data (setup.py)
LOG_LEVELS = ("debug", "info", "warning", "error")
BEAM_FLAGS_NOTE = (
    "Beam's own flags follow the job's: --runner (DirectRunner by default; DataflowRunner, "
    "FlinkRunner, ...), --direct_num_workers, --project, --region, --temp_location, ... and "
    "beamcap's --cluster_timeout SECONDS (default 120): how long a Flink or Spark run waits "
    "for a worker from the SDK worker pool, or for task slots after a TaskManager is lost, "
    "before it fails in one line (0: as long as the runner waits). "
    "See https://beam.apache.org/documentation/runners/capability-matrix/ and `make help`."
)


class Parser(argparse.ArgumentParser):
    """argparse whose errors are :class:`SettingsError` (one line, no usage dump); the module
    docstring of a command is its ``--help`` text."""

    def __init__(self, prog: str, description: str, **kwargs):
        super().__init__(
            prog=prog,
            description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,
            **kwargs,
        )
        self.add_argument(
            "--log-level",
            choices=LOG_LEVELS,
            default="info",
            help="Python logging level; debug also shows TensorFlow's C++ start-up logs "
            "(default: %(default)s)",
        )

    def parse_known_args(self, args=None, namespace=None):
        """argparse's, then applies ``--log-level``: every command honours it the same way."""
        parsed, rest = super().parse_known_args(args, namespace)
        configure_logging(parsed.log_level)
        return parsed, rest

    def error(self, message):
        raise SettingsError(message)


def _truth(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _help(field: dataclasses.Field) -> str:
    """The field's help, ending in "(required)" or its default; a field defaulting to None or ""
    says in its own words what happens without it."""
    text, meta = field.metadata["help"], field.metadata
    if meta["required"]:
        return f"{text} (required)"
    if field.default in (None, ""):
        return text
    return f"{text} (default: {field.default})"


class _Given(str):
    """A many-valued flag's values as given on the command line (not a default)."""


class _Joined(argparse.Action):
    """``--input a.jpg b.jpg --input c/`` -> "a.jpg,b.jpg,c/", the comma-joined form that a
    preset's value (a string or a list) also takes."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = getattr(namespace, self.dest, None)
        values = [given, *values] if isinstance(given, _Given) else values
        setattr(namespace, self.dest, _Given(",".join(values)))


def add_settings(parser: argparse.ArgumentParser, settings_type, title: str) -> None:
    """One flag per field of ``settings_type``: ``--x`` for a bool field (also ``--x=false``,
    the form Dataflow flex templates pass), ``--x VALUE`` otherwise."""
    group = parser.add_argument_group(title)
    for field in dataclasses.fields(settings_type):
        meta = field.metadata
        if "help" not in meta:
            continue
        options = dict(dest=field.name, default=field.default, help=_help(field))
        if meta["type"] is bool:
            options.update(nargs="?", const=True, type=_truth)
        elif meta.get("many"):
            options.update(nargs="+", type=meta["type"], action=_Joined)
        else:
            options.update(type=meta["type"], choices=meta["choices"])
        group.add_argument(flag(field.name), **options)


def _presets() -> dict:
    """{name: the preset's file} from the installed presets package, whatever the install."""
    files = importlib.resources.files(PRESETS).iterdir()
    return {entry.name[: -len(".yaml")]: entry for entry in files if entry.name.endswith(".yaml")}


def preset_names() -> list[str]:
    return sorted(_presets())


def load_preset(name_or_path: str | None) -> dict:
    """``demo`` -> configs/demo.yaml (the installed copy); a path or gs:// URI is read as it
    is; None -> {}."""
    if not name_or_path:
        return {}
    path = name_or_path
    if "/" not in name_or_path and not name_or_path.endswith((".yaml", ".yml")):
        presets = _presets()
        if name_or_path not in presets:
            raise SettingsError(f"--config: no preset {name_or_path!r}; presets: {sorted(presets)}")
        text = presets[name_or_path].read_text(encoding="utf-8")
        path = f"configs/{name_or_path}.yaml"
    else:
        text = None
    try:
        data = yaml.safe_load(storage.read_text(path) if text is None else text) or {}
    except FileNotFoundError:
        raise SettingsError(f"--config: {path} does not exist") from None
    except yaml.YAMLError as error:
        raise SettingsError(f"--config: {path} is not valid YAML ({error.problem})") from None
    if not isinstance(data, dict):
        raise SettingsError(f"--config: {path} must map section names to settings")
    return data


def preset_section(preset: dict, name: str, settings_type) -> dict:
    """The ``name`` section of a preset; a key that is no field of ``settings_type`` is an
    error naming it and the closest valid key."""
    values = preset.get(name) or {}
    if not isinstance(values, dict):
        raise SettingsError(f"--config: section {name!r} must map settings to values")
    known = [field.name for field in dataclasses.fields(settings_type)]
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
            raise SettingsError(f"--config: unknown {name} setting {key!r}{hint}")
    many = {field.name for field in dataclasses.fields(settings_type) if field.metadata.get("many")}
    return {
        key: ",".join(map(str, value)) if key in many and isinstance(value, list) else value
        for key, value in values.items()
    }


def as_flags(settings: dict, *, hyphens: bool = True) -> list[str]:
    """Settings as flags: {"image_size": 75, "experiments": ["a", "b"], "no_auth": true} ->
    ["--image-size", "75", "--experiments", "a", "--experiments", "b", "--no-auth"]. Job
    flags use hyphens; Beam's own (a preset's ``beam`` section) keep underscores."""
    flags = []
    for key, value in settings.items():
        name = "--" + (key.replace("_", "-") if hyphens else key)
        if value is None or value is False:
            continue
        if value is True:
            flags.append(name)
        else:
            for item in value if isinstance(value, list) else [value]:
                flags += [name, str(item)]
    return flags


def unknown_beam_args(args: list[str]) -> list[str]:
    """The arguments in ``args`` that no Beam ``PipelineOptions`` class takes: unknown flags
    and stray values, which Beam itself would only log as "Discarding unparseable args"."""
    import pipeline.cluster_health  # noqa: F401 - declares --cluster_timeout
    import transforms.gcs  # noqa: F401 - declares --storage_timeout, --storage_deadline
    from transforms.beam_internals import options

    return options.unknown_args(args, _refuse)  # "--no_auth=true": one line, not Beam's usage


def _refuse(message: str):
    raise SettingsError(message)


class Job(NamedTuple):
    settings: object  # the job's settings dataclass, checked
    beam_args: list[str]  # everything for Beam's PipelineOptions
    preset: dict  # the whole --config preset, for jobs with more than one section
    config: str | None = None  # the --config given (or a walk-through's own preset)
    log_level: str = "info"


def parse_job(
    settings_type,
    argv: list[str],
    *,
    prog: str,
    description: str,
    section: str,
    beam=True,
    steps_preset: str | None = None,
) -> Job:
    """Flags -> the job's checked settings (and Beam's flags when ``beam``): ``--config``
    presets, ranges, the type's own ``check()``; unknown flags and preset keys are errors.
    ``steps_preset``: a walk-through's own preset, the default ``--config`` that each of its
    steps reads."""
    parser = Parser(prog, description, epilog=BEAM_FLAGS_NOTE if beam else None)
    config_help = (
        f"preset name (configs/NAME.yaml) or YAML path that every step reads "
        f"(default: {steps_preset})"
        if steps_preset
        else f"preset name (configs/NAME.yaml) or YAML path: its '{section}' section sets "
        "this job's flags"
        + (" and its 'beam' section Beam's" if beam else "")
        + "; flags given here win"
    )
    parser.add_argument("--config", default=steps_preset, help=config_help)
    add_settings(parser, settings_type, f"{section} job")
    chosen, _ = parser.parse_known_args(argv)
    preset = load_preset(chosen.config)
    parser.set_defaults(**preset_section(preset, section, settings_type))
    args, rest = parser.parse_known_args(argv)
    if beam:
        rest = [*as_flags(preset.get("beam") or {}, hyphens=False), *rest]
    _refuse_unknown(unknown_beam_args(rest) if beam else rest, settings_type, rest)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(settings_type)}
    settings = settings_type(
        **{name: str(v) if isinstance(v, _Given) else v for name, v in given.items()}
    )
    check_ranges(settings)
    if hasattr(settings, "check"):
        settings.check()
    if beam:
        from transforms import gcs

        rest = gcs.prepare(rest)
    return Job(settings, rest, preset, chosen.config, args.log_level)


def _refuse_unknown(unknown: list[str], settings_type, args: list[str]) -> None:
    """One line for the first unknown flag (with the closest known one), else for a stray
    value: never a run over part of what the user typed."""
    fields = dataclasses.fields(settings_type)
    flags = [arg for arg in unknown if arg.startswith("-")]
    if flags:
        known = [flag(field.name) for field in fields] + ["--config", "--log-level"]
        name = flags[0].split("=", 1)[0]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise SettingsError(f"unknown flag {name}{hint}")
    if unknown:
        stray = unknown[0]
        before = args[args.index(stray) - 1] if args.index(stray) > 0 else None
        many = [flag(field.name) for field in fields if field.metadata.get("many")]
        rule = "a flag takes one value" + (
            f", except {' and '.join(many)}, which takes several ({many[0]} a.jpg b.jpg photos/)"
            if many
            else ""
        )
        after = f" after {before}" if before and before.startswith("--") else ""
        raise SettingsError(f"unexpected argument {stray!r}{after} ({len(unknown)} in all): {rule}")


def configure_logging(level: str = "info") -> None:
    """Python logging at ``level``; TensorFlow's C++ logs stay quiet unless ``debug`` (set
    before TensorFlow is imported, which the job modules only do once the flags are good).
    Below ``debug``, a failing step's traceback is not logged: the run's one-line reason is
    printed and written to ``_FAILED`` instead; ``--log-level debug`` shows it."""
    set_tensorflow_log_level(debug=level == "debug")
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(message)s",
        handlers=[_StderrHandler()],
        force=True,
    )
    if level == "debug":
        return
    from transforms.beam_internals import logs

    logging.getLogger("absl").setLevel(max(logging.WARNING, logging.getLogger().level))
    logs.quieten(logging.getLogger())


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a record comes, not as it was when logging was
    configured: a stream replaced since (a test's capture) may be closed by the time Beam's
    threads log at exit, which logging reports as a "Logging error" traceback."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass

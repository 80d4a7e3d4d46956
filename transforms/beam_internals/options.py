"""Beam's flag parser, asked which flags no ``PipelineOptions`` class takes. Beam builds it
afresh for every parse and hands it to ``get_all_options(add_extra_args_fn=...)``; its own
``error`` would print Beam's whole usage and exit.
"""

from __future__ import annotations

from collections.abc import Callable

from apache_beam.options.pipeline_options import PipelineOptions


def unknown_args(args: list[str], refuse: Callable[[str], None]) -> list[str]:
    """The arguments in ``args`` that no options class declared so far takes (unknown flags and
    stray values); a malformed one (e.g. "--no_auth=true") calls ``refuse(message)``, which
    raises."""
    parsers = []
    PipelineOptions([]).get_all_options(add_extra_args_fn=parsers.append)
    parsers[0].error = refuse
    _, unknown = parsers[0].parse_known_args(args)
    return unknown

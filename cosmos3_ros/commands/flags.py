# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Command-line flags from the settings schema: the same names as the node parameters, same bounds, defaults shown.

``--num_steps`` and ``--num-steps`` both work (the parameter name is the canonical spelling). A flag's value is
checked by the schema when parsed, so a bad value is a one-line usage error (exit 2) before anything loads. Flags
that are not given leave no attribute (``argparse.SUPPRESS``), so :func:`flag_values` can layer them: schema
default, then a parameter file, then the command line.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from cosmos3_ros.core.schema import BY_NAME, Setting, SettingsError, format_value, settings_in
from cosmos3_ros.core.settings import PolicySettings


def _parser_for(spec: Setting) -> Any:
    def parse(text: str) -> Any:
        if spec.kind == "int":
            try:
                value: Any = int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        elif spec.kind == "float":
            try:
                value = float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        elif spec.kind == "str_list":
            value = [t.strip() for t in text.split(",") if t.strip()]
        elif spec.kind == "float_list":
            try:
                value = [float(t) for t in text.split(",") if t.strip()]
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
        else:
            value = text
        try:
            return spec.validate(value)
        except SettingsError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = spec.kind  # argparse names the type in its error messages
    return parse


def add_setting_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    names: Iterable[str],
    *,
    defaults: dict[str, Any] | None = None,
    required: Iterable[str] = (),
) -> None:
    """Add ``--<name>`` (and ``--<name-with-dashes>``) for each named setting, with its help, bounds and default.

    ``defaults`` overrides the default shown (and used by :func:`flag_values`); ``required`` names flags that must
    be given.
    """
    defaults = defaults or {}
    required = set(required)
    for name in names:
        spec = BY_NAME[name]
        default = defaults.get(name, spec.default)
        flags = [f"--{name}"]
        if "_" in name or "." in name:
            flags.append("--" + name.replace("_", "-").replace(".", "-"))
        help_text = spec.description + (f" ({spec.bounds_text()})" if spec.bounds_text() else "")
        kwargs: dict[str, Any] = {"dest": name, "help": help_text, "default": argparse.SUPPRESS}
        if name in required:
            kwargs["required"] = True
        elif not spec.secret:
            kwargs["help"] += f" [default: {format_value(default)}]"
        if spec.kind == "bool":
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, **kwargs)
        else:
            metavar = "N" if spec.kind in ("int", "float") else name.upper().replace(".", "_")
            parser.add_argument(*flags, type=_parser_for(spec), metavar=metavar, **kwargs)


def add_sampling_flags(parser: argparse.ArgumentParser, *, defaults: dict[str, Any] | None = None) -> None:
    """The sampling settings (one model call) as a flag group."""
    group = parser.add_argument_group("sampling settings (same names as the node parameters)")
    add_setting_flags(group, [s.name for s in settings_in("sampling")], defaults=defaults)


def add_model_flags(parser: argparse.ArgumentParser, *, require_model: bool = True) -> None:
    """The model settings (what is loaded, and how) as a flag group."""
    group = parser.add_argument_group("model")
    names = [s.name for s in settings_in("model") if s.name != "warmup"]
    add_setting_flags(group, names, required=["model"] if require_model else [])


def flag_values(args: argparse.Namespace, names: Iterable[str], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{name: value}`` for ``names``: the flag when given, else ``base`` (e.g. a parameter file), else the default."""
    base = base or {}
    out = {}
    for name in names:
        if hasattr(args, name):
            out[name] = getattr(args, name)
        elif name in base:
            out[name] = base[name]
        else:
            out[name] = BY_NAME[name].validate(BY_NAME[name].default)
    return out


def settings_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None) -> PolicySettings:
    """The PolicySettings the parsed sampling flags (over ``base``) describe."""
    return PolicySettings(**flag_values(args, PolicySettings.field_names(), base))

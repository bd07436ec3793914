"""``jaxcnn models [NAME ...] [--json]``: every zoo model with its options (name, type,
default, from the factory's signature), its natural input size and parameter count;
with names, each model's whole docstring too."""
from __future__ import annotations

import inspect
import json
import textwrap

from .errors import UsageError


def register(subparsers) -> None:
    p = subparsers.add_parser("models", help="the model zoo: options, defaults, input size, parameters",
                              description="List the zoo models (jaxcnn.models.available()) with the options "
                                          "--model-option accepts, their types and defaults, the natural input "
                                          "size and the parameter count at the defaults.")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="models to describe in full (a zoo name or 'package.module:function'; default: all, briefly)")
    p.add_argument("--json", action="store_true", help="one JSON object per model instead of the text listing")
    p.set_defaults(func=run)


def _size(shape) -> str:
    return "x".join(map(str, shape)) if shape else "any"


def _default(option) -> str:
    return "(required)" if option.required else repr(option.default)


def format_info(info, full: bool = False) -> str:
    """A model's block: a header line (name, input size, classes, parameters), the
    docstring's first sentence, then one line per option (``num_classes`` aside, which
    the dataset sets) ``--model-option name: type = default``; with ``full``, the whole
    docstring."""
    state = f" + {info.state:,} statistics" if info.state else ""
    classes = f", {info.num_classes} classes" if info.num_classes else ""
    lines = [f"{info.name}: input {_size(info.input_shape)}{classes}, {info.params:,} parameters{state}"]
    summary = info.summary.replace("``", "") if info.summary else "(no docstring)"
    lines += textwrap.wrap(summary, 88, initial_indent="  ", subsequent_indent="  ")
    for o in info.options:
        if o.name == "num_classes":      # set by the dataset (train) or --num-classes (summary)
            continue
        kind = f": {o.type}" if o.type else ""
        lines.append(f"    --model-option {o.name}{kind} = {_default(o)}")
    if full and info.doc:
        lines += [""] + ["  " + line for line in info.doc.splitlines()]
    return "\n".join(lines)


def as_json(info) -> dict:
    """``info`` as plain JSON values (tuples as lists; a required option's default as null)."""
    return {"name": info.name, "input_shape": list(info.input_shape) if info.input_shape else None,
            "params": info.params, "state": info.state, "num_classes": info.num_classes,
            "summary": info.summary,
            "options": [{"name": o.name, "type": o.type, "required": o.required,
                         "default": None if o.default is inspect.Parameter.empty else
                         (list(o.default) if isinstance(o.default, tuple) else o.default)}
                        for o in info.options]}


def run(args) -> int:
    from ..models import available, describe
    names = args.names or available()
    infos = []
    for name in names:
        try:
            infos.append(describe(name))
        except ValueError as e:
            raise UsageError(str(e)) from None
    if args.json:
        for info in infos:
            print(json.dumps(as_json(info)))
        return 0
    print("\n\n".join(format_info(info, full=bool(args.names)) for info in infos))
    if not args.names:
        print(f"\n{len(infos)} models; `jaxcnn models NAME` shows one in full, "
              f"`jaxcnn train --model NAME --model-option KEY=VALUE` sets an option")
    return 0

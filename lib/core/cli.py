"""The command lines' parser: ``python -m <module>`` as its name, the module's summary, every default shown.

    ap = command_parser("lib.ops.export", __doc__)
    ap.add_argument("--out", default="export", help="the folder it writes")   # --help: "... (default: export)"

A command line parses its arguments before it imports its work (``main()`` imports it after
``parse_args``), so ``--help`` and a usage error answer in a blink, without loading torch; this
module imports nothing but argparse for that reason.
"""
from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each option's default after its help, unless there is none to show (a required option, a flag, a
    default of None or of an empty list); the description and examples kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.required or action.nargs == 0 or action.default is None or action.default == []:
            return action.help or ""
        return super()._get_help_string(action)


def command_parser(module: str, doc: str | None, **kwargs) -> argparse.ArgumentParser:
    """An ArgumentParser for ``python -m <module>``: that as its ``prog``, the first paragraph of ``doc``
    (the module's docstring) as its description, the indented ``python -m`` lines of its second
    paragraph, when it has them, as examples after the options; defaults shown (``HelpFormatter``)."""
    parts = (doc or "").strip().split("\n\n")
    examples = parts[1] if len(parts) > 1 and parts[1].lstrip().startswith("python -m") else None
    kwargs.setdefault("description", parts[0])
    if examples:
        kwargs.setdefault("epilog", "examples:\n" + examples)
    return argparse.ArgumentParser(prog=f"python -m {module}", formatter_class=HelpFormatter, **kwargs)

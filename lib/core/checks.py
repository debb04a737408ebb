"""How ``lib.core.config`` checks a recipe's values: each against its type annotation, and the message
that names the valid settings when one is unknown. ``TrainConfig.problems`` checks the choices and
ranges; this module holds what does not depend on a particular setting.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing


def unknown_message(unknown, valid, what: str) -> str:
    """"unknown <what> 'agu' (did you mean 'aug'?); valid ones: ..." for the names of ``unknown``."""
    hints = []
    for u in unknown:
        close = difflib.get_close_matches(u, valid, n=2, cutoff=0.5)
        hints.append(f"{u!r}" + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""))
    return f"unknown {what}{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; valid ones: {', '.join(valid)}"


def check_types(cfg) -> list[str]:
    """Each value of the dataclass ``cfg`` against its annotation, one line per misfit; ints are taken
    where floats are meant, and numeric text (YAML 1.1 reads ``1e-4`` as text) is converted (in place)."""
    hints = typing.get_type_hints(type(cfg))
    out = []
    for f in dataclasses.fields(cfg):
        v, want = getattr(cfg, f.name), hints[f.name]
        allowed = typing.get_args(want) or (want,)
        if v is None and type(None) in allowed:
            continue
        if float in allowed and isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                pass
        if float in allowed and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if int in allowed and isinstance(v, float) and v.is_integer() and float not in allowed:
            v = int(v)
        ok = any(isinstance(v, t) and not (t is int and isinstance(v, bool)) for t in allowed if t is not type(None))
        if not ok:
            names = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
            out.append(f"{f.name} {getattr(cfg, f.name)!r}: must be {names}")
        else:
            object.__setattr__(cfg, f.name, v)
    return out

"""Interactive review of out-of-fold mistakes in JupyterLab (ipywidgets), for 03_oof_analysis.

    review.reviewer(oofs[model], comp, out_dir / "exclude_ids.csv", model=model)   # 03's review cell

Pick the top losses, a confused class pair or a class; page through its images with the model's
probabilities; mark an image "wrong label", "duplicate" or "bad image" (a second click clears the
mark). Every click rewrites the marks CSV atomically (``lib.core.io.write_csv``), re-read first under a
lock (``lib.core.io.locked``) so two notebooks marking into one file keep each other's marks. The file
has an ``id`` column, so 02_train leaves the marked images out of training with
``exclude_ids="runs/analysis/exclude_ids.csv"``.

Widgets are built only where ipywidgets is installed and a front end shows them (``front_end``);
headless runs (papermill) get one printed line, and 03's static galleries stay the record there.
"""
from __future__ import annotations

import html
import io
from datetime import datetime, timezone

import ipywidgets as W
import pandas as pd
from IPython import get_ipython
from PIL import Image

from lib.core.io import locked, write_csv
from lib.core.paths import relative, resolve
from lib.data.competition import Competition
from lib.data.dataset import load_resized
from lib.insight.analysis import confusion_pairs, confusion_table, top_losses

MARKS = ("wrong label", "duplicate", "bad image")
COLUMNS = ["id", "mark", "label", "predicted", "p_label", "p_pred", "model", "marked_at"]


# ---------------------------------------------------------------- the marks file

def read_marks(path) -> pd.DataFrame:
    """The marks CSV (``COLUMNS``; empty when the file does not exist yet)."""
    p = resolve(path)
    if not p.exists():
        return pd.DataFrame(columns=COLUMNS)
    df = pd.read_csv(p, dtype={"id": str})
    if "id" not in df.columns or "mark" not in df.columns:
        raise ValueError(f"{p}: not a marks file of lib.insight.review (columns {list(df.columns)}, needs id and "
                         "mark); "
                         "move it away or give reviewer another marks_csv")
    return df


def set_mark(path, image_id: str, mark: str | None, info: dict | None = None) -> pd.DataFrame:
    """Mark ``image_id`` (one of ``MARKS``) or clear its mark (None) in the marks CSV at ``path``,
    written atomically at once; ``info`` fills the other columns (label, predicted, p_label, p_pred,
    model). The file is read, changed and written under its lock, so marks set meanwhile by another
    process are kept. Returns the table as written."""
    if mark is not None and mark not in MARKS:
        raise ValueError(f"mark {mark!r}: choose one of {list(MARKS)} or None (clear)")
    with locked(resolve(path)):
        df = read_marks(path)
        df = df[df["id"] != str(image_id)]
        if mark is not None:
            row = {**{c: "" for c in COLUMNS}, **(info or {}), "id": str(image_id), "mark": mark,
                   "marked_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            df = pd.concat([df, pd.DataFrame([row])[COLUMNS]], ignore_index=True)
        write_csv(resolve(path), df)
    return df


# ---------------------------------------------------------------- what can be reviewed

def view_options(losses: pd.DataFrame, pairs: pd.DataFrame, classes: list[str], names: list[str],
                 max_pairs: int = 50) -> list[tuple[str, tuple]]:
    """Dropdown choices (text, key): the top losses, the ``max_pairs`` most confused pairs (a
    ``confusion_pairs`` table), then every class with images; keys are what ``view_rows`` takes."""
    name = dict(zip(classes, names))
    counts = losses["label"].value_counts()
    out = [(f"top losses ({len(losses)} images)", ("losses",))]
    out += [(f"pair {name[r.true]} <> {name[r.predicted]} ({r.total} errors)", ("pair", r.true, r.predicted))
            for r in pairs.head(max_pairs).itertuples()]
    out += [(f"class {name[c]} ({counts[c]} images)", ("class", c)) for c in classes if c in counts.index]
    return out


def view_rows(losses: pd.DataFrame, key: tuple) -> pd.DataFrame:
    """The rows of a ``top_losses`` table a view shows, highest loss first: all (``("losses",)``),
    the images of one class (``("class", c)``), or those of either class of a pair predicted as the
    other (``("pair", a, b)``)."""
    if key[0] == "losses":
        return losses
    if key[0] == "class":
        return losses[losses["label"] == key[1]]
    if key[0] == "pair":
        a, b = key[1:]
        return losses[((losses["label"] == a) & (losses["predicted"] == b))
                      | ((losses["label"] == b) & (losses["predicted"] == a))]
    raise ValueError(f"view {key!r}: use ('losses',), ('class', c) or ('pair', a, b)")


# ---------------------------------------------------------------- the widget

def front_end() -> bool:
    """True when ipywidgets is installed and this runs in a Jupyter kernel whose current cell came
    from a front end that talks to the user (JupyterLab, Notebook, VS Code send execute requests
    that allow input()); False in plain Python and under papermill / nbclient, which do not."""
    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is None:
        return False
    return bool(kernel.get_parent().get("content", {}).get("allow_stdin", False))


def _png(img) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def reviewer(oof: pd.DataFrame, comp: Competition, marks_csv, model: str = "", n: int = 8, size: int = 112,
             max_pairs: int = 50, interactive: bool | None = None):
    """A widget to page through one model's OOF images (``n`` per page, shown at ``size`` px) by
    view (``view_options``) and mark them into ``marks_csv``. Returns the widget (a VBox), or None
    after printing why when ``interactive`` is False (default: ``front_end()``)."""
    if not (front_end() if interactive is None else interactive):
        print(f"interactive review: open this notebook in JupyterLab (kernel foldbook) to page through the "
              f"images and mark them into {relative(marks_csv)}; this headless run shows the static galleries")
        return None

    losses = top_losses(oof, comp.classes)
    pairs = confusion_pairs(confusion_table(oof, comp.classes))
    name = dict(zip(comp.classes, comp.names))
    paths = comp.train.set_index("id")["path"]
    table = read_marks(marks_csv)
    marks = dict(zip(table["id"], table["mark"]))  # id -> mark, as last written
    state = {"rows": losses, "page": 0}
    pick = W.Dropdown(options=view_options(losses, pairs, comp.classes, comp.names, max_pairs), description="show",
                      layout=W.Layout(width="420px"))
    prev, nxt = W.Button(description="< previous"), W.Button(description="next >")
    where, status = W.Label(), W.HTML()
    grid = W.GridBox(layout=W.Layout(grid_template_columns=f"repeat(auto-fill, {size + 24}px)", grid_gap="6px"))

    def say():
        status.value = (f"{len(marks)} image(s) marked in <code>{html.escape(str(relative(marks_csv)))}</code> "
                        "(02_train: <code>exclude_ids</code>)")

    def card(r):
        buttons = [W.Button(description=m, tooltip=f"mark {r.id} as {m} (click again to clear)",
                            layout=W.Layout(width=f"{size + 16}px")) for m in MARKS]

        def paint():
            for b in buttons:
                b.button_style = "danger" if marks.get(r.id) == b.description else ""

        def click(b):
            new = None if marks.get(r.id) == b.description else b.description
            info = {"label": r.label, "predicted": r.predicted, "p_label": round(r.p_label, 4),
                    "p_pred": round(r.p_pred, 4), "model": model}
            table = set_mark(marks_csv, r.id, new, info)
            marks.clear()
            marks.update(zip(table["id"], table["mark"]))
            paint(), say()

        for b in buttons:
            b.on_click(click)
        paint()
        color = "#c00" if r.label != r.predicted else "#060"
        label, predicted = html.escape(name[r.label]), html.escape(name[r.predicted])
        cap = W.HTML(f"<div style='font-size:11px;line-height:1.25'><b>{html.escape(str(r.id))}</b><br>"
                     f"{label} ({r.p_label:.2f})<br>"
                     f"<span style='color:{color}'>&rarr; {predicted} ({r.p_pred:.2f})</span></div>")
        img = W.Image(value=_png(load_resized(paths[r.id], size)), format="png", width=size, height=size)
        return W.VBox([img, cap, *buttons], layout=W.Layout(align_items="center"))

    def show(*_):
        rows, pages = state["rows"], max(1, -(-len(state["rows"]) // n))
        state["page"] = min(max(state["page"], 0), pages - 1)
        grid.children = [card(r) for r in rows.iloc[state["page"] * n:(state["page"] + 1) * n].itertuples()]
        where.value = f"page {state['page'] + 1} / {pages} ({len(rows)} images)"
        prev.disabled, nxt.disabled = state["page"] == 0, state["page"] >= pages - 1

    def turn(step):
        state["page"] += step
        show()

    def choose(change):
        state["rows"], state["page"] = view_rows(losses, change["new"]), 0
        show()

    pick.observe(choose, names="value")
    prev.on_click(lambda _: turn(-1))
    nxt.on_click(lambda _: turn(1))
    show(), say()
    return W.VBox([W.HBox([pick, prev, where, nxt]), grid, status])

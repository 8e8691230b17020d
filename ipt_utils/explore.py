"""Looking at results in a notebook: the synthesis explorer (stage 02) and report displays (06).

Synthesis explorer: pick a synthesized text and see side by side its raw text, the
prompt actually sent to the synthesizer (the history examples it inherited, oldest
first, then its own context), the pairs parsed from the generation, and the final
pre-training text with its template mode and layout; filter by mode / layout /
inherited. Everything is rebuilt from the stage's files: the round files
(`<work>/02_synthesize/shard-*/round-*.jsonl`, one `Synth` row per text with its
`history` keys and `prompt_text`) and `augmented.jsonl`. The prompt is rebuilt exactly
as `multiround.fit_prompt` built it (`format.build_prompt` over the kept history).

`explorer(ctx, cfg)` returns ipywidgets controls when the notebook runs interactively
(JupyterLab renders them with the prebuilt jupyterlab_widgets extension, no server
component) and static HTML tables under papermill (`interactive = False`).
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from . import io
from .format import render_context, render_example
from .multiround import Synth
from .shards import augmented_path, shard_dir

ALL = "(all)"


@dataclass
class HistoryPart:
    key: int
    id: str
    round: int
    rendered: str  # the example as it stood in the prompt: context + pairs + </s>


@dataclass
class Entry:
    key: int  # position in the shard
    id: str
    domain: str
    round: int
    slot: int
    inherited: bool
    chain_id: str
    raw_text: str
    prompt: str  # the prompt string sent (tokenized without added special tokens)
    history: list[HistoryPart]
    context: str  # the new text's part of the prompt (last piece of `prompt`)
    history_dropped: int
    truncated: bool
    prompt_tokens: int
    generated: str
    pairs: list[list[str]]
    text: str  # the pre-training document this text is a member of
    mode: str
    layout: str
    document: str = ""  # id of that document
    document_members: list = field(default_factory=list)  # its member ids, in order

    @property
    def label(self) -> str:
        inh = " · inherited" if self.inherited else ""
        return f"#{self.key} {self.id} · round {self.round} · {self.mode}/{self.layout}{inh}"


# ----------------------------------------------------------------------------- data

def round_files(work: Path, cfg) -> list[Path]:
    return sorted(shard_dir(Path(work), cfg).glob("round-*.jsonl"))


def build_entries(synths: Sequence, rows: Sequence[dict]) -> list[Entry]:
    """Join the round rows (Synth) with the augmented rows; rebuild each prompt."""
    by_key = {s.key: s for s in synths}
    # (chain_id, id): an id-less corpus's ids are text hashes, so identical texts share an id
    by_member = {(r["chain_id"], m["id"]): (r, m) for r in rows for m in r["members"]}
    entries = []
    for s in sorted(synths, key=lambda s: s.key):
        hist = [by_key[k] for k in s.history]
        parts = [HistoryPart(h.key, h.id, h.round, render_example(h.prompt_text, h.pairs)) for h in hist]
        context = render_context(s.prompt_text)
        row, mem = by_member.get((s.chain_id, s.id), ({}, {}))
        entries.append(Entry(
            key=s.key, id=s.id, domain=s.domain, round=s.round, slot=s.slot, inherited=s.inherited,
            chain_id=s.chain_id, raw_text=s.raw_text, prompt="".join(p.rendered for p in parts) + context,
            history=parts, context=context, history_dropped=s.history_dropped, truncated=s.truncated,
            prompt_tokens=s.prompt_tokens, generated=s.generated, pairs=s.pairs,
            text=row.get("text", ""), mode=mem.get("mode", "?"), layout=row.get("layout", "?"),
            document=row.get("id", ""), document_members=list(row.get("member_ids", ()))))
    return entries


def load_entries(rounds: Iterable[Path], augmented: Path) -> list[Entry]:
    synths = [Synth.from_dict(d) for p in rounds for d in io.iter_jsonl(p)]
    rows = list(io.iter_jsonl(augmented)) if Path(augmented).exists() else []
    return build_entries(synths, rows)


def load(work: Path, cfg) -> list[Entry]:
    """The entries of one shard of stage 02 (`work` = <work_root>/02_synthesize)."""
    return load_entries(round_files(work, cfg), augmented_path(Path(work), cfg))


def choices(entries: Sequence[Entry]) -> dict[str, list]:
    return {"mode": sorted({e.mode for e in entries}), "layout": sorted({e.layout for e in entries}),
            "inherited": [True, False]}


def select(entries: Sequence[Entry], mode=None, layout=None, inherited=None) -> list[Entry]:
    """Entries matching every given filter (None or "(all)" = any)."""
    def ok(value, want):
        return want in (None, ALL) or value == want

    return [e for e in entries if ok(e.mode, mode) and ok(e.layout, layout) and ok(e.inherited, inherited)]


def overview(entries: Sequence[Entry]):
    import pandas as pd

    return pd.DataFrame([{"key": e.key, "id": e.id, "round": e.round, "inherited": e.inherited,
                          "history": len(e.history), "pairs": len(e.pairs), "mode": e.mode,
                          "layout": e.layout, "prompt_tokens": e.prompt_tokens} for e in entries])


# ----------------------------------------------------------------------------- HTML

_CSS = ("<style>.ipt-x{display:grid;grid-template-columns:repeat(4,minmax(0,1fr));gap:8px;"
        "font-size:12px}.ipt-x h4{margin:2px 0 4px}.ipt-x pre{white-space:pre-wrap;word-break:break-word;"
        "margin:0 0 6px;padding:6px;background:#f6f8fa;border:1px solid #ddd;border-radius:4px;"
        "max-height:520px;overflow:auto;font-size:11.5px}.ipt-x pre.hist{background:#fff6e0}"
        ".ipt-x .meta{color:#555;font-size:11px;margin-bottom:4px}"
        ".ipt-x table{border-collapse:collapse;width:100%}.ipt-x td{border:1px solid #ddd;"
        "padding:3px;vertical-align:top;white-space:pre-wrap;font-size:11.5px}</style>")


def _pre(text: str, cls: str = "") -> str:
    return f'<pre class="{cls}">{html.escape(text)}</pre>'


def entry_html(e: Entry) -> str:
    """One text side by side: raw | prompt sent (history + context) | pairs | pre-training text."""
    raw = _pre(e.raw_text)
    hist = "".join(f'<div class="meta">history {i + 1}/{len(e.history)}: #{h.key} {html.escape(h.id)} '
                   f"(round {h.round})</div>" + _pre(h.rendered, "hist") for i, h in enumerate(e.history))
    dropped = f", {e.history_dropped} link(s) dropped for the budget" if e.history_dropped else ""
    prompt = (f'<div class="meta">{e.prompt_tokens} tokens, {len(e.history)} history example(s){dropped}'
              f'{", text truncated" if e.truncated else ""}</div>' + hist
              + '<div class="meta">this text</div>' + _pre(e.context))
    if e.pairs:
        pairs = "<table>" + "".join(f"<tr><td><b>{i + 1}.</b> {html.escape(q)}</td><td>{html.escape(a)}</td></tr>"
                                    for i, (q, a) in enumerate(e.pairs)) + "</table>"
    else:
        pairs = '<div class="meta">no pairs parsed; generation:</div>' + _pre(e.generated)
    final = (f'<div class="meta">mode <b>{html.escape(e.mode)}</b> · layout <b>{html.escape(e.layout)}</b>'
             f' · chain {html.escape(e.chain_id)}'
             f'{" · inherited" if e.inherited else ""}'
             f'{f" · document of {len(e.document_members)} texts" if len(e.document_members) > 1 else ""}'
             f'</div>' + _pre(e.text))
    cols = [("Raw text", raw), ("Prompt sent to the synthesizer", prompt),
            (f"Generated pairs ({len(e.pairs)})", pairs), ("Pre-training text", final)]
    return (_CSS + f"<div><b>{html.escape(e.label)}</b></div><div class='ipt-x'>"
            + "".join(f"<div><h4>{t}</h4>{body}</div>" for t, body in cols) + "</div>")


def static_html(entries: Sequence[Entry], examples: int = 3, rows: int = 30) -> str:
    """Papermill fallback: counts, an overview table and a few texts side by side."""
    if not entries:
        return "<p>No synthesized texts found.</p>"
    df = overview(entries)
    counts = df.groupby(["mode", "layout", "inherited"]).size().rename("texts").reset_index()
    picks, seen = [], set()
    for e in entries:  # one example per (inherited, mode) first
        if (e.inherited, e.mode) not in seen:
            seen.add((e.inherited, e.mode))
            picks.append(e)
    picks = (picks + [e for e in entries if e not in picks])[:examples]
    return ("<h4>Texts by mode / layout / inherited</h4>" + counts.to_html(index=False)
            + f"<h4>First {min(rows, len(df))} of {len(df)} texts</h4>" + df.head(rows).to_html(index=False)
            + "".join(entry_html(e) for e in picks))


# ----------------------------------------------------------------------------- widget

def widget(entries: Sequence[Entry]):
    import ipywidgets as w

    opts = choices(entries)
    mode = w.Dropdown(options=[ALL] + opts["mode"], description="mode")
    layout = w.Dropdown(options=[ALL] + opts["layout"], description="layout")
    inherited = w.Dropdown(options=[(ALL, ALL), ("inherited", True), ("not inherited", False)],
                           description="inherited")
    pick = w.Dropdown(description="text", layout=w.Layout(width="60%"))
    count = w.HTML()
    view = w.HTML()

    def refresh_list(*_):
        found = select(entries, mode.value, layout.value, inherited.value)
        count.value = f"<i>{len(found)} of {len(entries)} texts match</i>"
        current = pick.value
        pick.options = [(e.label, e.key) for e in found]
        if not found:
            view.value = "<p>No text matches these filters.</p>"
            return
        pick.value = current if current in {e.key for e in found} else found[0].key
        show()

    by_key = {e.key: e for e in entries}

    def show(*_):
        if pick.value is not None:
            view.value = entry_html(by_key[pick.value])

    for c in (mode, layout, inherited):
        c.observe(refresh_list, names="value")
    pick.observe(show, names="value")
    refresh_list()
    return w.VBox([w.HBox([mode, layout, inherited]), w.HBox([pick, count]), view])


def explorer(ctx, cfg, entries: Sequence[Entry] | None = None):
    """The explorer of this run's stage 02 output: widgets interactively, static HTML otherwise."""
    from IPython.display import HTML

    entries = load(ctx.work_of("02_synthesize"), cfg) if entries is None else entries
    if ctx.interactive:
        try:
            return widget(entries)
        except ImportError:  # pragma: no cover - ipywidgets is a dependency
            pass
    return HTML(static_html(entries))


# ----------------------------------------------------------------------------- report (06)

def show_report(tables: Sequence, figures: Sequence) -> None:
    """Display the report's built tables (as tables) and figures (as images) in the notebook."""
    from IPython.display import HTML, Image, Markdown, display

    for t in tables:
        if t.skipped:
            continue
        display(Markdown(f"### {t.title}"))
        display(HTML(t.df.to_html(index=False)))
        if t.extra is not None and len(t.extra):
            display(HTML(t.extra.to_html(index=False)))
        for n in t.notes:
            display(Markdown(f"_{n}_"))
    for f in figures:
        pngs = [p for p in f.files if str(p).endswith(".png")]
        if f.skipped or not pngs:
            continue
        display(Markdown(f"### {f.title}"))
        for p in pngs:
            display(Image(filename=str(p)))

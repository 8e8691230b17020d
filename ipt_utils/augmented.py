"""The augmented corpus stage 02 hands to stage 03: one row per pre-training document.

`build_rows` templifies every chain of synthesized examples (ipt_utils.templify) into rows
of the declared `AugmentedRow` schema (docs/CONTRACTS.md); `write_parquet_twin` writes the
typed Parquet copy of an augmented JSONL (members as structs, pairs as (instruction,
response) structs).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Sequence, TypedDict

from . import contracts, io
from .multiround import Synth
from .templify import Member, templify_chain


class AugmentedMember(TypedDict):
    """One source text of a document."""

    id: Annotated[str, "the text's id (its corpus `id` field, else a hash of its text: io.record_id)"]
    raw_text: Annotated[str, "the text's bytes as read from the raw corpus"]
    pairs: Annotated[list[list[str]], "its synthesized [instruction, response] pairs, as parsed (before templify drops malformed ones)"]
    mode: Annotated[str, "its question type(s) in the document: plain | options | cot | options+cot | mixed | raw"]
    inherited: Annotated[bool, "its prompt held a history of earlier examples AND it produced pairs"]
    dropped_pairs: Annotated[int, "its pairs templify dropped as malformed"]


@contracts.row_schema("02_synthesize/augmented.jsonl")
class AugmentedRow(TypedDict):
    """A row of <work>/02_synthesize/augmented.jsonl (and of variants/<name>/augmented.jsonl):
    one pre-training document; every synthesized text is a member of exactly one row.
    augmented.parquet holds the same rows, with each pair as {instruction, response}."""

    id: Annotated[str, "the document's id: its first member's id"]
    member_ids: Annotated[list[str], "ids of its source texts, in chain order"]
    domain: Annotated[str, "the first member's domain"]
    chain_id: Annotated[str, "the chain it was cut from (`<shard>-<key>` when the corpus is sharded)"]
    text: Annotated[str, "the pre-training text (a few-shot document of its members, or one raw text verbatim)"]
    layout: Annotated[str, "classic | pairs_first | dialog | numbered | inline | next_turn | raw"]
    mode: Annotated[str, "question type(s) of the document, as for a member"]
    dropped_pairs: Annotated[int, "malformed pairs dropped over its members"]
    members: Annotated[list[AugmentedMember], "its source texts, in order"]


def build_rows(synths: Sequence[Synth], seed: int) -> list[AugmentedRow]:
    """Templify every chain -> one row per pre-training document (chain order = first member's
    position; a chain's documents in order), each an `AugmentedRow`. Every text is in exactly one row."""
    chains: dict[str, list[Synth]] = {}
    for s in sorted(synths, key=lambda s: (s.round, s.key)):
        chains.setdefault(s.chain_id, []).append(s)
    rows = []
    for cid, members in sorted(chains.items(), key=lambda kv: kv[1][0].key):
        docs = templify_chain([Member(m.id, m.raw_text, m.pairs) for m in members], seed)
        k = 0
        for d in docs:
            ms, k = members[k:k + len(d["member_ids"])], k + len(d["member_ids"])
            rows.append({"id": d["id"], "member_ids": d["member_ids"], "domain": ms[0].domain, "chain_id": cid,
                         "text": d["text"], "layout": d["layout"], "mode": d["mode"], "dropped_pairs": d["dropped"],
                         "members": [{"id": m.id, "raw_text": m.raw_text, "pairs": m.pairs, "mode": i["mode"],
                                      "inherited": m.inherited, "dropped_pairs": i["dropped"]}
                                     for m, i in zip(ms, d["members"])]})
    return rows


def augmented_schema():
    """Typed Parquet schema of the augmented rows (one per document): members as structs,
    their pairs as (instruction, response) structs."""
    import pyarrow as pa

    pair = pa.struct([("instruction", pa.string()), ("response", pa.string())])
    member = pa.struct([("id", pa.string()), ("raw_text", pa.string()), ("pairs", pa.list_(pair)),
                        ("mode", pa.string()), ("inherited", pa.bool_()), ("dropped_pairs", pa.int32())])
    return pa.schema([("id", pa.string()), ("member_ids", pa.list_(pa.string())), ("domain", pa.string()),
                      ("chain_id", pa.string()), ("text", pa.string()), ("layout", pa.string()),
                      ("mode", pa.string()), ("dropped_pairs", pa.int32()), ("members", pa.list_(member))])


def _typed_row(r: dict) -> dict:
    return {**r, "members": [{**m, "pairs": [{"instruction": q, "response": a} for q, a in m["pairs"]]}
                             for m in r["members"]]}


def write_parquet_twin(jsonl: Path, rows=None) -> Path:
    """<stem>.parquet beside an augmented JSONL, for `datasets.load_dataset("parquet")` and
    pandas users; streamed from the JSONL when `rows` is not given."""
    source = rows if rows is not None else io.iter_jsonl(jsonl)
    typed = (_typed_row(r) for r in source)
    out = Path(jsonl).with_suffix(".parquet")
    io.write_parquet(out, typed, augmented_schema())
    return out

"""A toy world where the paper's effect can show at CPU scale (the `cpu-effect` profile).

People with five attributes, each person described by several paraphrased biographies
(Allen-Zhu & Li, "Physics of Language Models: Part 3.1", 2023: facts stored from plain text
are hard to extract by question; question-answer data about *some* people in pre-training
makes facts about *other* people extractable -- instruction pre-training is that mixing,
with pairs synthesized from the texts themselves).

People are split into disjoint groups, each with one role in the pipeline:
  tuning     stage 01's synthesizer-tuning collection ({context, QA_list}); also Mix PT's
             and Instruct PT's tuning data (pretrain.synth_collection)
  converted  bios first in the raw corpus: stage 02 converts them (synthesize.max_texts)
  tuned      bios in the raw corpus; stage 04 instruction-tunes on their QA
  heldout    bios in the raw corpus, never converted, never tuned: the evaluation
Files (the layouts the stages already read, see `write_world`):
  raw_corpus.jsonl         {id, domain, text}               converted, tuned, heldout bios
  synth_collection.jsonl   {context, QA_list, QA_type, rc_name}  tuning people
  instructions.jsonl       {id, task, instruction, response}     QA about tuned people
  general_instructions.jsonl {question, response}                (only for base-model arms)
  eval/heldout_qa.jsonl    {id, question, subject, choices, answer, context}  QA about heldout
                           people; `context` is the cloze prefix ("X was born in"): stage 04
                           scores it as task cloze (is the fact stored at all?)
  eval/tuned_qa.jsonl      the same for tuned people (what tuning itself teaches)
  world.json               the sizes and the seed that produced the files
  tokenizer/               a byte-level BPE fitted to the world's texts (`fit_tokenizer`): every
                           word of the world is one token, so names and values are stored and
                           copied as units (the fixtures' tokenizer splits a name into 3-5 pieces)
Deterministic: same WorldConfig -> byte-identical files (`python -m ipt_utils.effect_world
--check` verifies the shipped copy).
"""
from __future__ import annotations

import argparse
import filecmp
import json
import random
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from . import assets, io, templify

DATA_DIR = Path(__file__).resolve().parent / "effect_data"
GROUPS = ("tuning", "converted", "tuned", "heldout")
ATTRS = ("city", "year", "university", "field", "employer")

FIRST_F = ("Maria", "Kelia", "Belia", "Falia", "Yoria", "Anna", "Lena", "Sara", "Nora", "Elena",
           "Ida", "Vera", "Mila", "Rosa", "Lisa", "Clara", "Hana", "Tara", "Olga", "Irene")
FIRST_M = ("Jalen", "Yoran", "Tekan", "Baran", "Fenar", "Helar", "Istar", "Nalar", "Garal", "Savan",
           "Jonas", "Paul", "Ivan", "Tomas", "Leon", "Hugo", "Marco", "Oscar", "Felix", "Victor")
LAST = ("Dravra", "Kelov", "Ithov", "Rosin", "Lorel", "Solan", "Varum", "Fenin", "Jalva", "Fenva",
        "Brinan", "Yoron", "Kelis", "Savor", "Tekal", "Garalish", "Calenum", "Brinum", "Oralum",
        "Ithovum", "Rosinan", "Solanon", "Tekalek", "Fenisar", "Dravales", "Jalanar", "Kelovin",
        "Marten", "Holst", "Berger", "Lund", "Norrel", "Castel", "Weber", "Moreau", "Silva",
        "Petrov", "Novak", "Keller", "Brandt")
CITIES = ("Noroburg", "Dravamouth", "Faleburg", "Hararburg", "Heloford", "Jalenford", "Lamenmouth",
          "Osenburg", "Ralovmouth", "Savangrad", "Solanstad", "Ulingrad", "Dravigrad", "Oregrad",
          "Brinalmouth", "Barelbrook", "Noreburg", "Torland", "Merland", "Tekelistan", "Ulistan",
          "Istavia", "Thalova", "Aluesh", "Doranova", "Brinislis", "Calolis", "Savanlis", "Ithornor",
          "Orunor")
UNIVERSITIES = tuple(f"the University of {c}" for c in (
    "Dravales", "Brinan", "Calenum", "Fenisar", "Istne", "Jalva", "Kelis", "Rosin", "Solorton",
    "Thalne", "Ulingrad", "Varum", "Yoria", "Garal", "Helar", "Ithov", "Lorel", "Savor", "Tekuis",
    "Oralum"))
FIELDS = ("physics", "chemistry", "biology", "medicine", "history", "economics", "law", "music",
          "geology", "astronomy", "botany", "mathematics", "philosophy", "linguistics", "zoology",
          "architecture", "engineering", "statistics", "painting", "poetry")
EMPLOYERS = tuple(f"{a} {b}" for a, b in zip(
    ("Casar", "Tekal", "Brinum", "Jalen", "Solan", "Varum", "Osen", "Thalic", "Dorene", "Fenar",
     "Kelov", "Merland", "Ralov", "Istar", "Yoran", "Calolis", "Heloford", "Savan", "Torland", "Garal",
     "Nalar", "Ithov", "Lorel", "Barel", "Rosin", "Aluesh", "Orunor", "Fenva", "Dravra", "Belia"),
    ("Works", "Holdings", "Industries", "Group", "Partners", "Technologies") * 5))
VALUES = {"city": CITIES, "year": tuple(str(y) for y in range(1900, 2000)),
          "university": UNIVERSITIES, "field": FIELDS, "employer": EMPLOYERS}

# Four paraphrases per attribute. {S}: subject (full name in a bio's first sentence, then a
# pronoun), {P}: possessive. The first of each list is also the cloze prompt's wording.
TEMPLATES = {
    "city": ("{S} was born in {v}.", "{S} came into the world in {v}.",
             "{P} birthplace is {v}.", "{S} spent {p} early years in {v}, where {s} was born."),
    "year": ("{S} was born in the year {v}.", "{P} year of birth is {v}.",
             "{S} celebrates {p} birthday each year since {v}.", "{S} arrived in this world in {v}."),
    "university": ("{S} studied at {v}.", "{S} graduated from {v}.",
                   "{S} received {p} education at {v}.", "{S} completed {p} degree at {v}."),
    "field": ("{S} specialised in {v}.", "{P} field of study was {v}.",
              "{S} devoted {p} studies to {v}.", "{S} chose {v} as {p} subject."),
    "employer": ("{S} worked for {v}.", "{S} was employed by {v}.",
                 "{S} built a career at {v}.", "{P} employer was {v}."),
}
QUESTIONS = {
    "city": "Where was {n} born?", "year": "In which year was {n} born?",
    "university": "Which university did {n} attend?", "field": "What did {n} study?",
    "employer": "Which company did {n} work for?",
}
CLOZE = {a: TEMPLATES[a][0].split("{v}")[0] for a in ATTRS}  # "{S} was born in " ...


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 0
    tuning: int = 4000  # tuning records, one bio each; names recur with other attributes (make_people)
    converted: int = 50  # the raw corpus's people converted by stage 02 (a fifth showed nothing, docs/EFFECT.md)
    tuned: int = 15
    heldout: int = 50
    bios: int = 3  # paraphrased bios per person (raw corpus)
    tuning_bios: int = 1  # bios per tuning record
    mix_records: int = 25  # first records of the collection that pre-training mixes in
    choices: int = 4  # options per evaluation question (correct + distractors)


TOKENIZER_VOCAB = 1536  # room for every word of the world (about 1,500 are used) plus the bytes


@dataclass(frozen=True)
class Person:
    pid: str
    name: str
    female: bool
    attrs: dict  # attribute -> value


def make_people(cfg: WorldConfig) -> dict[str, list[Person]]:
    """group -> people, attributes drawn independently. The raw corpus's people (converted,
    tuned, heldout) have unique names; the tuning people take the remaining names in turn, so
    a tuning name recurs (every ~1,500 records) with other attributes: answering from memory
    of a name does not pay, only reading the text does."""
    rng = random.Random(f"{cfg.seed}:people")
    names = [(f, last, fem) for fem, pool in ((True, FIRST_F), (False, FIRST_M)) for f in pool for last in LAST]
    corpus = [g for g in GROUPS if g != "tuning"]
    total = sum(getattr(cfg, g) for g in corpus)
    if total >= len(names):
        raise ValueError(f"WorldConfig asks for {total} corpus people; the name pools hold {len(names)}")
    rng.shuffle(names)  # prefix-stable: resizing a later group keeps the earlier groups' people
    picked = {}
    for g in corpus:
        picked[g], names = names[:getattr(cfg, g)], names[getattr(cfg, g):]
    picked["tuning"] = [names[k % len(names)] for k in range(cfg.tuning)]
    return {g: [Person(f"{g}-{k:04d}", f"{first} {last}", fem, {a: rng.choice(VALUES[a]) for a in ATTRS})
                for k, (first, last, fem) in enumerate(picked[g])] for g in GROUPS}


def _fill(template: str, person: Person, first: bool, value: str) -> str:
    s, p = ("she", "her") if person.female else ("he", "his")
    subj = person.name if first else s.capitalize()
    poss = f"{person.name}'s" if first else p.capitalize()
    return template.format(S=subj, P=poss, s=s, p=p, v=value)


def bio(person: Person, rng: random.Random) -> tuple[str, list[str]]:
    """One paraphrase and its attribute order: attributes in random order, a random template
    each; the full name in the first sentence, a pronoun after it."""
    order = list(ATTRS)
    rng.shuffle(order)
    return " ".join(_fill(rng.choice(TEMPLATES[a]), person, i == 0, person.attrs[a]) for i, a in enumerate(order)), order


def qa_pairs(person: Person, order=ATTRS) -> list[tuple[str, str]]:
    """The person's question-answer pairs, one per attribute, in `order`."""
    return [(QUESTIONS[a].format(n=person.name), person.attrs[a]) for a in order]


def _options(value: str, attr: str, k: int, rng: random.Random) -> tuple[list[str], int]:
    wrong = rng.sample([v for v in VALUES[attr] if v != value], k - 1)
    gold = rng.randrange(k)
    return wrong[:gold] + [value] + wrong[gold:], gold


def build(cfg: WorldConfig) -> dict[str, list[dict]]:
    """Every file of the world (relative path -> rows)."""
    people = make_people(cfg)
    rng = random.Random(f"{cfg.seed}:bios")
    bios = {p.pid: [bio(p, rng) for _ in range(cfg.bios if g != "tuning" else cfg.tuning_bios)]
            for g in GROUPS for p in people[g]}
    corpus = [{"id": f"{p.pid}-bio{j}", "domain": "general", "text": t}
              for g in ("converted", "tuned", "heldout") for p in people[g] for j, (t, _) in enumerate(bios[p.pid])]
    # A tuning record asks about its text in reading order, as a reader would: the k-th answer
    # is in the k-th sentence. The synthesizer follows that order; it still guesses most
    # values instead of copying them (docs/EFFECT.md).
    collection = [{"context": t, "QA_list": [{"Q": q, "A": a} for q, a in qa_pairs(p, order)],
                   "QA_type": "free-form", "rc_name": "biographies"}
                  for p in people["tuning"] for t, order in bios[p.pid]]
    instructions = [{"id": f"{p.pid}-{a}", "task": f"bio_{a}", "instruction": q, "response": ans}
                    for p in people["tuned"] for a, (q, ans) in zip(ATTRS, qa_pairs(p))]
    general = [{"question": r["instruction"], "response": r["response"]} for r in instructions]
    erng = random.Random(f"{cfg.seed}:eval")

    def qa_items(group):
        rows = []
        for p in people[group]:
            for a, (q, ans) in zip(ATTRS, qa_pairs(p)):
                choices, gold = _options(ans, a, cfg.choices, erng)
                rows.append({"id": f"{p.pid}-{a}", "question": q, "subject": a, "choices": choices, "answer": gold,
                             "context": _fill(CLOZE[a], p, True, "").rstrip()})
        return rows

    return {"raw_corpus.jsonl": corpus, "synth_collection.jsonl": collection,
            "synth_collection_mix.jsonl": collection[:cfg.mix_records],
            "instructions.jsonl": instructions, "general_instructions.jsonl": general,
            "eval/heldout_qa.jsonl": qa_items("heldout"), "eval/tuned_qa.jsonl": qa_items("tuned")}


def tokenizer_texts(files: dict[str, list[dict]]):
    """What the world's tokenizer is fitted to: the raw corpus, the tuning collection as
    pre-training renders it (templify, so the question patterns' words are tokens too), the
    instructions and the evaluation prompts."""
    for r in files["raw_corpus.jsonl"]:
        yield r["text"]
    for i, r in enumerate(files["synth_collection.jsonl"]):
        member = templify.Member(f"tuning-{i}", r["context"], [(p["Q"], p["A"]) for p in r["QA_list"]])
        yield templify.templify_chain([member], seed=i)[0]["text"]
    for r in files["instructions.jsonl"]:
        yield f"{r['instruction']}\n{r['response']}"
    for r in files["eval/heldout_qa.jsonl"]:
        yield f"Question: {r['question']}\nAnswer: {r['choices'][r['answer']]}\n{r['context']}"


def fit_tokenizer(out_dir: str | Path, files: dict[str, list[dict]], vocab_size: int = TOKENIZER_VOCAB):
    """A byte-level BPE (hub layout: tokenizer.json + configs) fitted to the world's texts, with a
    prefix space so a bio's first word is the same token as inside a question. Deterministic."""
    return assets.build_tiny_tokenizer(out_dir, vocab_size=vocab_size, texts=tokenizer_texts(files),
                                       add_prefix_space=True)


def write_world(out_dir: str | Path, cfg: WorldConfig = WorldConfig()) -> dict[str, int]:
    """Write every file under out_dir (atomically each) and the world's tokenizer; returns
    {relative path: rows}."""
    out_dir = Path(out_dir)
    files = build(cfg)
    counts = {rel: io.write_jsonl(out_dir / rel, rows) for rel, rows in files.items()}
    fit_tokenizer(out_dir / "tokenizer", files)
    io.write_json(out_dir / "world.json", {"config": asdict(cfg), "files": counts})
    return counts


def check(shipped: str | Path = DATA_DIR, cfg: WorldConfig | None = None) -> list[str]:
    """Relative paths whose regenerated copy differs from `shipped` (with the shipped config)."""
    shipped = Path(shipped)
    if cfg is None:
        cfg = WorldConfig(**io.read_json(shipped / "world.json")["config"])
    with tempfile.TemporaryDirectory() as tmp:
        counts = write_world(tmp, cfg)
        tokenizer = [str(f.relative_to(tmp)) for f in sorted((Path(tmp) / "tokenizer").iterdir())]
        return [r for r in [*counts, *tokenizer, "world.json"]
                if not (shipped / r).exists() or not filecmp.cmp(Path(tmp) / r, shipped / r, shallow=False)]


def _question_patterns() -> dict:
    import re

    return {a: re.compile("^" + re.escape(q).replace(re.escape("{n}"), "(?P<n>.+)") + "$") for a, q in QUESTIONS.items()}


def synthesis_accuracy(augmented_rows, cfg: WorldConfig) -> dict:
    """How right the synthesizer's pairs about the world's texts are (stage 02's output rows,
    {members: [{id, pairs}]}; members whose id is not a world bio are skipped and counted).

    A pair is `known` when its question is one of the world's question templates; it is
    `right_name` when that question names the text's person, `correct` when the answer is
    also that person's value of the attribute asked."""
    people = {p.pid: p for ps in make_people(cfg).values() for p in ps}
    pats = _question_patterns()
    n = dict(members=0, members_skipped=0, pairs=0, known=0, right_name=0, correct=0)
    for row in augmented_rows:
        for m in row.get("members") or ():
            person = people.get(str(m.get("id", "")).rsplit("-bio", 1)[0])
            if person is None:
                n["members_skipped"] += 1
                continue
            n["members"] += 1
            for q, a in m.get("pairs") or ():
                n["pairs"] += 1
                hit = next(((attr, mt) for attr, pat in pats.items() if (mt := pat.match(q.strip()))), None)
                if hit is None:
                    continue
                attr, mt = hit
                n["known"] += 1
                if mt.group("n") == person.name:
                    n["right_name"] += 1
                    n["correct"] += int(a.strip() == person.attrs[attr])
    rates = {f"{k}_rate": n[k] / n["pairs"] if n["pairs"] else 0.0 for k in ("known", "right_name", "correct")}
    return {**n, **rates}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(DATA_DIR))
    ap.add_argument("--check", action="store_true", help="exit 1 if the shipped world would change")
    for f in WorldConfig.__dataclass_fields__.values():
        ap.add_argument(f"--{f.name}", type=int, default=f.default)
    args = ap.parse_args(argv)
    cfg = WorldConfig(**{k: getattr(args, k) for k in WorldConfig.__dataclass_fields__})
    if args.check:
        bad = check(args.out)
        print("effect world up to date" if not bad else f"differs: {', '.join(bad)}", file=sys.stderr)
        return 1 if bad else 0
    for rel, n in write_world(args.out, cfg).items():
        print(f"{n:6d}  {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

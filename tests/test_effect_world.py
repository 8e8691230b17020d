"""The cpu-effect toy world: determinism, disjoint roles, evaluation items, synthesis scoring."""
from __future__ import annotations

import pytest

from ipt_utils import effect_world as ew
from ipt_utils import io

SMALL = ew.WorldConfig(seed=3, tuning=12, converted=5, tuned=5, heldout=15, bios=2, mix_records=4)


@pytest.fixture(scope="module")
def files():
    return ew.build(SMALL)


def test_shipped_world_is_up_to_date():
    assert ew.check() == []


def test_regeneration_is_byte_identical(tmp_path):
    ew.write_world(tmp_path / "a", SMALL)
    assert ew.check(tmp_path / "a") == []
    (tmp_path / "a" / "eval" / "heldout_qa.jsonl").write_text("{}\n")
    assert ew.check(tmp_path / "a") == ["eval/heldout_qa.jsonl"]


def test_roles_are_disjoint_and_the_converted_fifth_comes_first(files):
    people = ew.make_people(SMALL)
    names = [p.name for g in ew.GROUPS if g != "tuning" for p in people[g]]
    assert len(names) == len(set(names))
    assert not set(names) & {p.name for p in people["tuning"]}
    corpus_people = [r["id"].rsplit("-bio", 1)[0] for r in files["raw_corpus.jsonl"]]
    assert not any(pid.startswith("tuning-") for pid in corpus_people)
    n_conv = SMALL.converted * SMALL.bios
    assert all(p.startswith("converted-") for p in corpus_people[:n_conv])
    assert not any(p.startswith("converted-") for p in corpus_people[n_conv:])
    assert len(files["raw_corpus.jsonl"]) == (SMALL.converted + SMALL.tuned + SMALL.heldout) * SMALL.bios
    tuned = {p.name for p in people["tuned"]}
    assert all(any(n in r["instruction"] for n in tuned) for r in files["instructions.jsonl"])
    assert files["synth_collection_mix.jsonl"] == files["synth_collection.jsonl"][:SMALL.mix_records]
    assert len(files["synth_collection.jsonl"]) == SMALL.tuning * SMALL.tuning_bios


def test_bios_state_every_attribute_and_name_once(files):
    people = {p.pid: p for ps in ew.make_people(SMALL).values() for p in ps}
    for r in files["raw_corpus.jsonl"]:
        p = people[r["id"].rsplit("-bio", 1)[0]]
        assert r["text"].count(p.name) == 1
        assert all(v in r["text"] for v in p.attrs.values())
    bios = [r["text"] for r in files["raw_corpus.jsonl"]]
    assert len(set(bios)) > 0.9 * len(bios)  # paraphrases, not copies


def test_eval_items_ask_heldout_people_with_the_gold_in_the_choices(files):
    people = ew.make_people(SMALL)
    held = {p.pid: p for p in people["heldout"]}
    rows = files["eval/heldout_qa.jsonl"]
    assert len(rows) == SMALL.heldout * len(ew.ATTRS)
    for r in rows:
        p = held[r["id"].rsplit("-", 1)[0]]
        assert len(r["choices"]) == SMALL.choices == len(set(r["choices"]))
        assert r["choices"][r["answer"]] == p.attrs[r["subject"]]
        assert p.name in r["question"] and r["context"].startswith(p.name)
    golds = [r["answer"] for r in files["eval/heldout_qa.jsonl"]]
    assert len(set(golds)) == SMALL.choices  # the gold position varies
    city = next(r for r in rows if r["subject"] == "city")
    assert city["context"] == f"{held[city['id'].rsplit('-', 1)[0]].name} was born in"


def test_synthesis_accuracy_scores_names_and_answers():
    p = ew.make_people(SMALL)["converted"][0]
    right = [list(qa) for qa in ew.qa_pairs(p)]
    wrong_name = [[right[0][0].replace(p.name, "Nobody Here"), right[0][1]]]
    wrong_answer = [[right[1][0], "never"]]
    rows = [{"members": [{"id": f"{p.pid}-bio0", "pairs": right + wrong_name + wrong_answer + [["Why?", "x"]]},
                         {"id": "other-text", "pairs": [["Where was A born?", "B"]]}]}]
    acc = ew.synthesis_accuracy(rows, SMALL)
    assert (acc["members"], acc["members_skipped"], acc["pairs"]) == (1, 1, 8)
    assert (acc["known"], acc["right_name"], acc["correct"]) == (7, 6, 5)
    assert acc["correct_rate"] == 5 / 8


def test_tuning_names_recur_with_other_attributes_so_only_copying_answers_works():
    cfg = ew.WorldConfig(tuning=3000, converted=5, tuned=5, heldout=10)
    people = ew.make_people(cfg)
    tuning = people["tuning"]
    pool = len(ew.FIRST_F + ew.FIRST_M) * len(ew.LAST) - 20
    assert len({p.name for p in tuning}) == pool  # every free name in use, then again
    again = [(p, q) for p, q in zip(tuning, tuning[pool:]) if p.name == q.name]
    assert len(again) == 3000 - pool and any(p.attrs != q.attrs for p, q in again)
    assert not {p.name for p in tuning} & {p.name for g in ("converted", "tuned", "heldout") for p in people[g]}


def test_too_many_people_is_a_clear_error():
    with pytest.raises(ValueError, match="name pools hold"):
        ew.make_people(ew.WorldConfig(heldout=2000))


def test_world_tokenizer_makes_every_name_and_value_one_token(tmp_path):
    files = ew.build(SMALL)
    tok = ew.fit_tokenizer(tmp_path / "tok", files)
    people = [p for ps in ew.make_people(SMALL).values() for p in ps]
    for p in people:
        assert len(tok(" " + p.name)["input_ids"]) == 2  # first name, last name
        assert tok(p.name)["input_ids"] == tok(" " + p.name)["input_ids"]  # same at a text's start
        for a in ("city", "year", "field"):
            assert len(tok(" " + p.attrs[a])["input_ids"]) == 1
    bio = files["raw_corpus.jsonl"][0]["text"]
    assert tok.decode(tok(bio)["input_ids"]).strip() == bio


def test_cli_check(tmp_path, capsys):
    assert ew.main(["--out", str(tmp_path), "--tuning", "6", "--converted", "2", "--tuned", "2",
                    "--heldout", "3"]) == 0
    assert io.read_json(tmp_path / "world.json")["config"]["tuning"] == 6
    assert ew.main(["--out", str(tmp_path), "--check"]) == 0

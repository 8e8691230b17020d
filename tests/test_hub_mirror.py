"""Hub mirrors: each loads through the project's own hub code path, with the hub's layout."""
import json
import re

import pytest

from ipt_utils import dataset_mirror as dm
from ipt_utils import hub_mirror as hm
from ipt_utils import model_mirror as mm
from ipt_utils import schema
from ipt_utils.profiles import load_profile
from ipt_utils.schema import validate


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("mirror")
    for repo in dm.DATASETS:
        dm.build_dataset(r, repo)
    return r


def _hf(root, repo, config=""):
    return f"hf:{hm.dataset_dir(root, repo)}" + (f":{config}" if config else "")


def test_collection_layout_and_configs(root):
    d = hm.dataset_dir(root, schema.SYNTH_COLLECTION)
    assert sorted(p.name for p in d.iterdir() if p.is_dir()) == sorted(dm.COLLECTION_FOLDERS)
    assert len(dm.COLLECTION_FOLDERS) == 35
    assert all(len(list((d / f / "shard").glob("*.jsonl"))) >= 2 for f in dm.COLLECTION_FOLDERS)
    configs = schema.dataset_configs(_hf(root, schema.SYNTH_COLLECTION))
    assert configs == list(schema.SYNTH_COLLECTION_CONFIGS) == schema.dataset_configs("hf:" + schema.SYNTH_COLLECTION)
    assert "AQUA_RAT" in configs and "AQUA_RAT_yes_opt" not in configs and "PubMedQA" not in configs


def test_collection_loads_every_paper_500m_config_through_synth_tune(root):
    import datasets

    from ipt_utils import collection, synth_tune

    section = load_profile("paper-500m").section("synth_tune")
    cfg = validate(synth_tune.Params, {**section, "data": _hf(root, schema.SYNTH_COLLECTION)})
    examples, stats = collection.load_collection(cfg)
    assert sorted({e.dataset for e in examples}) == sorted(section["datasets"])
    assert stats.get("records_malformed", 0) == 0
    # a record's own rc_name may differ from its config (AQUA_RAT reads AQUA_RAT_yes_opt/): the config wins
    aqua = validate(synth_tune.Params, {**section, "data": _hf(root, schema.SYNTH_COLLECTION), "datasets": ["AQUA_RAT"],
                                        "heldout_datasets": []})
    assert {e.dataset for e in collection.load_collection(aqua)[0]} == {"AQUA_RAT"}
    rows = list(datasets.load_dataset(str(hm.dataset_dir(root, schema.SYNTH_COLLECTION)), "AQUA_RAT", split="train",
                                      streaming=True))
    assert rows and set(rows[0]) == {"context", "QA_list", "QA_type", "rc_name"}
    assert rows[0]["rc_name"] == "AQUA_RAT_yes_opt"  # read from AQUA_RAT_yes_opt/
    qs = [p["Q"] for r in rows for p in r["QA_list"]]
    assert any("\nOptions:\n- " in q for q in qs)
    assert any("Let's think step by step." in q for q in qs)
    no_opt = datasets.load_dataset(str(hm.dataset_dir(root, schema.SYNTH_COLLECTION)), "PubMedQA_no_opt", split="train")
    assert not any("\nOptions:\n" in p["Q"] for r in no_opt for p in r["QA_list"])
    with pytest.raises(ValueError, match="PubMedQA"):
        datasets.load_dataset(str(hm.dataset_dir(root, schema.SYNTH_COLLECTION)), "PubMedQA", split="train")


def test_refinedweb_files_and_sharding_by_files(root):
    import pyarrow.parquet as pq

    from ipt_utils import synthesize

    d = hm.dataset_dir(root, "tiiuae/falcon-refinedweb")
    files = sorted(p.name for p in (d / "data").iterdir())
    assert len(files) == 8 and all(re.fullmatch(r"train-\d{5}-of-05534-[0-9a-f]+\.parquet", f) for f in files)
    schema = pq.read_schema(d / "data" / files[0])
    assert schema.names == ["content", "url", "timestamp", "dump", "segment", "image_urls"]
    import datasets

    feats = datasets.load_dataset(str(d), split="train", streaming=True).features
    assert feats["timestamp"].dtype == "timestamp[s]"  # parquet stores ms; the card's features say s
    section = load_profile("paper-500m").section("synthesize")
    cfg = validate(synthesize.Params, {**section, "corpus": _hf(root, "tiiuae/falcon-refinedweb"),
                                       "num_shards": 4, "shard_index": 1})
    recs = [r for _, r in synthesize.iter_records(cfg)]
    assert recs and all(isinstance(r["content"], str) and r["content"] for r in recs)
    assert len(recs) == 2 * 8  # 2 of the 8 files, 8 rows each


def test_instruction_and_eval_data_through_project_loaders(root):
    from ipt_utils import instruct_tune, instructions

    d = hm.dataset_dir(root, "Open-Orca/OpenOrca")
    assert sorted(p.name for p in d.glob("*.parquet")) == sorted(dm.OPENORCA_FILES)
    from ipt_utils import sources

    orca = list(sources.records(_hf(root, "Open-Orca/OpenOrca")))
    assert len(orca) == 24 and set(orca[0]) == {"id", "system_prompt", "question", "response"}
    flan_dir = hm.dataset_dir(root, "Open-Orca/FLAN")
    assert sorted(p.name for p in flan_dir.iterdir() if p.is_dir()) == sorted(dm.FLAN_FOLDERS)
    assert (flan_dir / "flan_fsopt_data" / "part.0.parquet").exists()
    flan = instructions.load_instructions(_hf(root, "Open-Orca/FLAN"))
    assert len(flan) == 4 * len(dm.FLAN_FOLDERS)
    mmlu = instruct_tune.load_eval_rows(_hf(root, "cais/mmlu", "all"))
    assert len(mmlu) == 4 * 57 and {r["subject"] for r in mmlu} == set(schema.MMLU_SUBJECTS)
    assert all(len(r["choices"]) == 4 and r["answer"] in range(4) for r in mmlu)
    mmlu_dir = hm.dataset_dir(root, "cais/mmlu")
    assert (mmlu_dir / "anatomy" / "dev-00000-of-00001.parquet").exists()
    assert (mmlu_dir / "all" / "auxiliary_train-00000-of-00001.parquet").exists()
    assert len(schema.dataset_configs(f"hf:{mmlu_dir}:all")) == 59 == len(schema.dataset_configs("hf:cais/mmlu:all"))


@pytest.mark.parametrize("repo,column,path", [
    ("MedRAG/pubmed", "content", "chunk/pubmed23n0001.jsonl"),
    ("ashraq/financial-news-articles", "text", f"data/{dm.FINANCE_FILES[0]}"),
])
def test_domain_corpora_stream_their_text_column(root, repo, column, path):
    import datasets

    d = hm.dataset_dir(root, repo)
    assert (d / path).exists()
    rows = list(datasets.load_dataset(str(d), split="train", streaming=True))
    assert rows and all(isinstance(r[column], str) and r[column] for r in rows)
    assert "title" in rows[0]


def test_dataset_build_is_idempotent_deterministic_and_rejects_unknown(root, tmp_path):
    repo = "tiiuae/falcon-refinedweb"
    d = hm.dataset_dir(root, repo)
    before = {p: p.stat().st_mtime_ns for p in d.rglob("*")}
    assert dm.build_dataset(root, repo) == d
    assert {p: p.stat().st_mtime_ns for p in d.rglob("*")} == before  # no-op
    other = dm.build_dataset(tmp_path, repo)
    assert all((other / p.relative_to(d)).read_bytes() == p.read_bytes() for p in d.rglob("*") if p.is_file())
    dm.build_dataset(tmp_path, repo, seed=1)  # other arguments: rebuilt in place
    assert json.loads((other / hm.MARKER).read_text())["seed"] == 1
    assert not [p for p in other.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left
    with pytest.raises(ValueError, match="known: .*cais/mmlu"):
        dm.build_dataset(tmp_path, "nobody/nothing")
    assert schema.dataset_configs("hf:nobody/nothing") is None


# --------------------------------------------------------------------------- models

CLASSES = {"mistralai/Mistral-7B-v0.1": "MistralForCausalLM",
           "instruction-pretrain/instruction-synthesizer": "MistralForCausalLM",
           "meta-llama/Meta-Llama-3-8B": "LlamaForCausalLM",
           "EleutherAI/pythia-1b": "GPTNeoXForCausalLM",
           "bigscience/bloom-3b": "BloomForCausalLM"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    r = tmp_path_factory.mktemp("models")
    return {repo: mm.build_model(r, repo) for repo in mm.MODELS}


@pytest.mark.parametrize("repo", sorted(CLASSES))
def test_model_mirror_loads_like_the_hub(models, repo):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, spec = models[repo], mm.MODELS[repo]
    model = AutoModelForCausalLM.from_pretrained(d, use_safetensors=True)
    assert type(model).__name__ == CLASSES[repo]
    assert model.config.hidden_size // model.config.num_attention_heads == 32
    for f in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json"):
        assert (d / f).exists(), f
    if spec.shards > 1:
        index = json.loads((d / "model.safetensors.index.json").read_text())
        files = sorted(set(index["weight_map"].values()))
        assert files == [f"model-{k:05d}-of-{spec.shards:05d}.safetensors" for k in range(1, spec.shards + 1)]
        assert not (d / "model.safetensors").exists()
    else:
        assert (d / "model.safetensors").exists()
    tok = AutoTokenizer.from_pretrained(d)
    ids = tok("Read <CON> the text")["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True).strip() == "Read <CON> the text"
    assert "<CON>" not in tok.get_vocab()  # markup is plain text on every real tokenizer
    logits = model(input_ids=__import__("torch").tensor([ids])).logits
    assert logits.shape[-1] == model.config.vocab_size >= len(tok)


def test_tokenizer_kinds_match_the_real_ones(models):
    from transformers import AutoConfig, AutoTokenizer

    mistral = AutoTokenizer.from_pretrained(models["mistralai/Mistral-7B-v0.1"])
    assert (mistral.unk_token_id, mistral.bos_token_id, mistral.eos_token_id, mistral.pad_token) == (0, 1, 2, None)
    assert mistral("hello")["input_ids"][0] == 1  # BOS added by default
    assert mistral.convert_ids_to_tokens(3) == "<0x00>"  # byte fallback pieces
    assert mistral.tokenize("hello world")[0].startswith("▁")

    llama3 = AutoTokenizer.from_pretrained(models["meta-llama/Meta-Llama-3-8B"])
    assert llama3.bos_token == "<|begin_of_text|>" and llama3.eos_token == "<|end_of_text|>"
    assert llama3.pad_token is None and llama3.unk_token is None
    assert llama3("hello")["input_ids"][0] == llama3.bos_token_id == len(llama3) - 256  # specials after the vocab
    cfg = AutoConfig.from_pretrained(models["meta-llama/Meta-Llama-3-8B"])
    assert cfg.num_key_value_heads < cfg.num_attention_heads and cfg.bos_token_id == llama3.bos_token_id

    neox = AutoTokenizer.from_pretrained(models["EleutherAI/pythia-1b"])
    assert neox.bos_token == neox.eos_token == "<|endoftext|>" and neox.eos_token_id == 0
    assert 0 not in neox("hello")["input_ids"]  # nothing added around the text

    bloom = AutoTokenizer.from_pretrained(models["bigscience/bloom-3b"])
    assert (bloom.bos_token_id, bloom.eos_token_id, bloom.pad_token_id) == (1, 2, 3)
    assert bloom.padding_side == "left" and bloom("hello")["input_ids"][0] != 1


def test_model_build_is_idempotent_and_deterministic(models, tmp_path):
    repo = "meta-llama/Meta-Llama-3-8B"
    d = models[repo]
    before = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    mm.build_model(d.parent.parent.parent, repo)
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == before
    again = mm.build_model(tmp_path, repo)
    for name in ("tokenizer.json", "model-00001-of-00004.safetensors", "model.safetensors.index.json"):
        assert (again / name).read_bytes() == (d / name).read_bytes(), name
    with pytest.raises(ValueError, match="known: .*EleutherAI/pythia-1b"):
        mm.build_model(tmp_path, "nobody/nothing")

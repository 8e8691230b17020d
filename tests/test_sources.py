"""ipt_utils.sources: one reader for local files and hf: datasets (here local dirs in the hub's layout)."""
import json

import pytest

from ipt_utils import sources


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """A dataset dir with two configs (README `configs:`), each of two data files."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    root = tmp_path / "ds"
    for config in ("alpha", "beta"):
        for f in range(2):
            _jsonl(root / config / f"train-{f}.jsonl", [{"text": f"{config} {f} {r}"} for r in range(3)])
    (root / "README.md").write_text(
        "---\nconfigs:\n" + "".join(f"- config_name: {c}\n  data_files:\n  - split: train\n    path: {c}/*.jsonl\n"
                                    for c in ("alpha", "beta")) + "---\n")
    return root


def test_local_file_records_carry_file_and_line(tmp_path):
    path = _jsonl(tmp_path / "a.jsonl", [{"text": "x"}, {"text": "y"}])
    assert list(sources.located_records(str(path))) == [(f"{path}:1", {"text": "x"}), (f"{path}:2", {"text": "y"})]
    txt = tmp_path / "b.txt"
    txt.write_text("one\ntwo\n")
    assert list(sources.records(str(txt), text_column="body")) == [{"body": "one"}, {"body": "two"}]
    assert sources.identity(str(path)) == path and sources.identity("hf:org/name") == "hf:org/name"


def test_hub_configs_all_named_or_one(hub_dir):
    src = f"hf:{hub_dir}"
    every = list(sources.located_records(src))
    assert [r["text"] for _, r in every] == [f"{c} {f} {r}" for c in ("alpha", "beta") for f in range(2)
                                             for r in range(3)]
    assert every[0][0] == f"{hub_dir}[alpha:train]#0" and every[6][0] == f"{hub_dir}[beta:train]#0"
    named = [r["text"] for r in sources.records(f"{src}:beta")]
    assert named == [r["text"] for r in sources.records(src, configs=["beta"])] and len(named) == 6
    assert all(t.startswith("beta") for t in named)


def test_hub_file_shards_split_the_data_files(hub_dir):
    src = f"hf:{hub_dir}:alpha"
    parts = [[r["text"] for r in sources.records(src, shard=(i, 2))] for i in range(2)]
    assert sorted(parts[0] + parts[1]) == sorted(f"alpha {f} {r}" for f in range(2) for r in range(3))
    assert {t.split()[1] for t in parts[0]}.isdisjoint({t.split()[1] for t in parts[1]})  # whole files each
    with pytest.raises(ValueError, match="needs at least num_shards=3 data files, the dataset has 2"):
        list(sources.records(src, shard=(0, 3)))


"""Stage 02 at scale: sharded jobs + merge, the shard CLI, kill -9 and resume, hf streaming input."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from ipt_utils import cli, generation, synth_stats
from ipt_utils import shards as sh
from ipt_utils import synthesize as sy

from test_synthesize import FakeGen, WordTok, _cfg

REPO = Path(__file__).resolve().parent.parent


def _corpus(path, n=40):
    recs = [{"id": f"t{i:03d}", "text": ("" if i % 13 == 5 else
                                         ("nopair " if i % 7 == 3 else "") + f"w{i} about topic {i % 5} here")}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return recs


def _job(work, stage_dir, cfg, tok, stamp="m"):
    """What the notebook / `ipt_utils synthesize` do for one shard, with a fake engine."""
    ctx = SimpleNamespace(work=work, stage_dir=stage_dir, seed=0, profile="p")
    stage_dir.mkdir(parents=True, exist_ok=True)
    texts, data_stats = sy.load_texts(cfg)
    engine = generation.Engine(lambda: FakeGen(tok), "fake", 4, model_stamp=stamp)
    synths, info = sy.synthesize_shard(ctx, cfg, texts, engine, tok)
    rows = sy.write_augmented(ctx, cfg, synths)
    df = sy.write_stats(ctx, synths, rows, cfg)
    metrics = sy.summarize(data_stats, synths, engine, info, df)
    return ctx, engine, metrics


def _assert_parquet_twin(jsonl, rows):
    """<stem>.parquet loads with `datasets` and equals the JSONL rows (members' pairs as structs)."""
    from datasets import load_dataset

    ds = load_dataset("parquet", data_files=str(jsonl.with_suffix(".parquet")), split="train")
    assert ds.num_rows == len(rows) and ds.column_names == list(rows[0])
    got = [{**r, "members": [{**m, "pairs": [[p["instruction"], p["response"]] for p in m["pairs"]]}
                             for m in r["members"]]} for r in ds]
    assert got == rows and any(m["pairs"] for r in rows for m in r["members"])


def test_two_shards_merged_equal_one_shard(tmp_path):
    _corpus(tmp_path / "c.jsonl")
    tok = WordTok()
    one = _cfg(corpus=str(tmp_path / "c.jsonl"), rounds=2)
    ctx1, eng1, m1 = _job(tmp_path / "one", tmp_path / "one_stage", one, tok)
    m1 = sh.finish_shard(ctx1, one, m1, eng1)
    single = [json.loads(x) for x in (tmp_path / "one" / "augmented.jsonl").read_text().splitlines()]

    work, stage_dir = tmp_path / "two", tmp_path / "two_stage"
    shards = [_cfg(corpus=str(tmp_path / "c.jsonl"), rounds=2, num_shards=2, shard_index=i) for i in (0, 1)]
    ctx, eng, m0 = _job(work, stage_dir, shards[0], tok)
    assert sh.finish_shard(ctx, shards[0], m0, eng, merge=False) is m0
    assert (work / "augmented-00000-of-00002.jsonl").exists() and not (stage_dir / "synthesis_stats.csv").exists()
    with pytest.raises(sh.ShardsIncomplete, match=r"shard 00001-of-00002: missing"):
        sh.merge_shards(ctx, shards[0], "m")
    ctx, eng, m = _job(work, stage_dir, shards[1], tok)
    merged = sh.finish_shard(ctx, shards[1], m, eng)  # the last shard merges

    rows = [json.loads(x) for x in (work / "augmented.jsonl").read_text().splitlines()]
    ids = [i for r in rows for i in r["member_ids"]]
    assert len(ids) == len(set(ids)) and sorted(ids) == sorted(i for r in single for i in r["member_ids"])  # each text once
    # shard 0's rows come first (deterministic order); chain ids are unique across shards
    assert {i for r in rows[:m0["documents"]] for i in r["member_ids"]} <= {f"t{i:03d}" for i in range(0, 40, 2)}
    assert all(r["chain_id"].split("-")[0] in ("0", "1") for r in rows)
    # the fake synthesizer's pairs depend on the text alone, so each text's pairs match
    assert {m["id"]: m["pairs"] for r in rows for m in r["members"]} == \
        {m["id"]: m["pairs"] for r in single for m in r["members"]}
    for k in ("texts_in", "records_read", "texts_skipped", "texts_synthesized", "pairs_total",
              "texts_without_pairs", "items_total", "pairs_per_text", "tokens_per_pair", "parse_failure_rate"):
        assert merged[k] == pytest.approx(m1[k]), k
    assert merged["records_read"] == 40 and merged["texts_skipped"] == 3 and merged["shards"] == 2
    assert sum(merged["mode_mix"].values()) == merged["texts_synthesized"]
    import pandas as pd

    stats = pd.read_csv(stage_dir / "synthesis_stats.csv")
    assert len(stats) == len(ids) and sorted(stats["shard"].unique()) == [0, 1]  # one line per text
    assert merged["documents"] == len(rows) < len(ids) and merged["multi_text_share"] > 0
    assert (stage_dir / "synthesis.png").exists()
    # the typed Parquet twins (merged and single-shard) hold the same rows; shards have none
    assert not list(work.glob("augmented-*.parquet"))
    for jsonl, want in ((work / "augmented.jsonl", rows), (tmp_path / "one" / "augmented.jsonl", single)):
        _assert_parquet_twin(jsonl, want)
    # merging again is byte-identical
    before = (work / "augmented.jsonl").read_bytes()
    sh.merge_shards(ctx, shards[1], "m")
    assert (work / "augmented.jsonl").read_bytes() == before
    # a shard made with other params (or other weights) is refused as stale
    assert "stale" in str(pytest.raises(sh.ShardsIncomplete, sh.merge_shards, ctx, shards[1], "other").value)
    (work / "augmented-00001-of-00002.jsonl").write_text("{}\n")
    with pytest.raises(sh.ShardsIncomplete, match=r"00001-of-00002: augmented-00001-of-00002.jsonl has 1 rows"):
        sh.merge_shards(ctx, shards[1], "m")


# ----------------------------------------------------------------------------- CLI + kill -9

@pytest.fixture(scope="module")
def cli_profile(tmp_path_factory):
    """A profile whose synthesizer is a tokenizer dir; the engine is the test fake (fake_synthesizer)."""
    from ipt_utils import assets

    d = tmp_path_factory.mktemp("cli")
    recs = _corpus(d / "corpus.jsonl", n=48)
    assets.build_tiny_tokenizer(d / "synth", vocab_size=300, files=(str(d / "corpus.jsonl"),))
    prof = yaml.safe_load((REPO / "params" / "ci-tiny.yaml").read_text())
    prof["synthesize"].update(model=str(d / "synth"), corpus=str(d / "corpus.jsonl"), max_texts=0, rounds=4,
                              batch_size=4, max_new_tokens=32, max_model_len=512, backend="transformers")
    prof["run"]["work_dir"] = ""
    (d / "p.yaml").write_text(yaml.safe_dump(prof))
    return d, recs


def test_cli_shards_then_merge(cli_profile, fake_synthesizer, capsys):
    d, recs = cli_profile
    prof = str(d / "p.yaml")
    out = d / "sharded"
    assert cli.main(["synthesize", "--profile", prof, "--out", str(out), "--num-shards", "3", "--shard-index", "2"]) == 0
    assert cli.main(["synth-merge", "--profile", prof, "--out", str(out), "--num-shards", "3"]) == 1
    err = capsys.readouterr().err
    assert "shard 00000-of-00003: missing" in err and "shard 00001-of-00003: missing" in err and "00002" not in err
    for i in (0, 1):
        assert cli.main(["synthesize", "--profile", prof, "--out", str(out), "--num-shards", "3",
                         "--shard-index", str(i)]) == 0
    assert cli.main(["synth-merge", "--profile", prof, "--out", str(out), "--num-shards", "3"]) == 0
    rows = [json.loads(x) for x in (out / "work/02_synthesize/augmented.jsonl").read_text().splitlines()]
    want = sorted(r["id"] for r in recs if r["text"].strip())
    assert sorted(i for r in rows for i in r["member_ids"]) == want
    m = json.loads((out / "02_synthesize/metrics.json").read_text())
    assert m["texts_synthesized"] == len(want) and m["records_read"] == 48 and m["shards"] == 3
    assert cli.main(["synthesize", "--profile", prof, "--out", str(out), "--num-shards", "3", "--shard-index", "3"]) == 2


def test_cli_all_shards_in_one_process_equals_shard_jobs(cli_profile, fake_synthesizer):
    """`synthesize --all-shards`: every shard in turn with one engine start, then the merge; the
    same files as one job per shard + synth-merge; a rerun generates nothing."""
    d, recs = cli_profile
    prof = str(d / "p.yaml")
    jobs, one = d / "jobs", d / "one_process"
    for i in range(3):
        assert cli.main(["synthesize", "--profile", prof, "--out", str(jobs), "--num-shards", "3",
                         "--shard-index", str(i)]) == 0
    assert cli.main(["synth-merge", "--profile", prof, "--out", str(jobs), "--num-shards", "3"]) == 0
    starts = fake_synthesizer
    starts.clear()
    assert cli.main(["synthesize", "--profile", prof, "--out", str(one), "--num-shards", "3", "--all-shards"]) == 0
    assert len(starts) == 1  # the backend started once for the three shards
    for f in ("work/02_synthesize/augmented.jsonl", "work/02_synthesize/augmented.parquet",
              "02_synthesize/synthesis_stats.csv"):
        assert (one / f).read_bytes() == (jobs / f).read_bytes(), f
    m = json.loads((one / "02_synthesize/metrics.json").read_text())
    assert m["shards"] == 3 and m["rounds_generated"] == 3 * 4
    assert cli.main(["synthesize", "--profile", prof, "--out", str(one), "--num-shards", "3", "--all-shards"]) == 0
    m = json.loads((one / "02_synthesize/metrics.json").read_text())
    assert m["rounds_generated"] == 0 and m["rounds_resumed"] == 3 * 4


def _synth_cmd(prof, out, delay):
    """`python -m ipt_utils synthesize` with the fake synthesizer (tests/fake_engine.py), `delay` s per call."""
    return [sys.executable, str(REPO / "tests" / "fake_engine.py"), str(delay), "synthesize", "--profile", prof,
            "--out", str(out)]


def test_kill_9_then_rerun_gives_identical_output(cli_profile, fake_synthesizer):
    d, recs = cli_profile
    prof = str(d / "p.yaml")
    clean = d / "clean"
    assert cli.main(["synthesize", "--profile", prof, "--out", str(clean)]) == 0

    killed = d / "killed"
    sdir = killed / "work/02_synthesize/shard-00000-of-00001"
    delay = 0.4  # s per engine call: 3 calls per round
    proc = subprocess.Popen(_synth_cmd(prof, killed, delay), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 30
        while not (sdir / "round-000.jsonl").exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "no round file within 30 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "work/02_synthesize/augmented.jsonl").exists()
    assert not (sdir / "round-003.jsonl").exists()

    rerun = subprocess.run(_synth_cmd(prof, killed, delay), cwd=REPO, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    m = json.loads((killed / "02_synthesize/metrics.json").read_text())
    assert m["rounds_resumed"] >= 1 and m["rounds_resumed"] + m["rounds_generated"] == 4
    assert 0 < m["inherited_share"] < 1 and m["texts_without_pairs"] > 0  # chains form and break
    got = (killed / "work/02_synthesize/augmented.jsonl").read_bytes()
    assert got == (clean / "work/02_synthesize/augmented.jsonl").read_bytes()
    ids = [i for x in got.decode().splitlines() for i in json.loads(x)["member_ids"]]
    assert len(ids) == len(set(ids)) and sorted(ids) == sorted(r["id"] for r in recs if r["text"].strip())
    assert (killed / "02_synthesize/synthesis_stats.csv").read_bytes() == \
        (clean / "02_synthesize/synthesis_stats.csv").read_bytes()
    assert not list(sdir.glob(".*.tmp"))  # no half-written file left behind


def test_hf_dataset_input_is_streamed(tmp_path, monkeypatch):
    """The hf: code path (datasets.load_dataset(..., streaming=True)) on a local dataset dir."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "train.jsonl").write_text(
        "".join(json.dumps({"body": t}) + "\n" for t in ["alpha", " ", "beta <s> x", "gamma"]))
    import datasets

    calls = []
    real = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append(k) or real(*a, **k))
    texts, st = sy.load_texts(_cfg(corpus=f"hf:{tmp_path / 'ds'}", text_column="body", split="train",
                                   num_shards=1, max_texts=3))
    assert calls == [{"split": "train", "streaming": True}]
    assert [t.text for t in texts] == ["alpha", "beta <s> x"]  # its bytes; only the prompt copy is neutralised
    assert [t.neutralised for t in texts] == [False, True]
    assert st == {"records_read": 3, "texts_in": 3, "texts_skipped_empty": 1, "texts_neutralised": 1,
                  "shard_by": "records"}


def test_shard_by_files_reads_only_its_own_files(tmp_path, monkeypatch):
    """shard_by files on a local dataset dir of 5 data files (the hf: code path): the jobs split
    the files, each reads only its own, together they cover every record once; max_texts caps
    each job at ceil(max_texts / num_shards); too few files is a clear error."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    ds = tmp_path / "ds" / "data"
    ds.mkdir(parents=True)
    for f in range(5):
        (ds / f"train-{f:05d}.jsonl").write_text(
            "".join(json.dumps({"id": f"f{f}r{r}", "text": f"file {f} record {r}"}) + "\n" for r in range(4)))
    corpus = f"hf:{tmp_path / 'ds'}"

    def job(i, n=2, **kw):
        return sy.load_texts(_cfg(corpus=corpus, shard_by="files", num_shards=n, shard_index=i, **kw))

    (a, sa), (b, sb) = job(0), job(1)
    files = [{t.id.split("r")[0] for t in texts} for texts in (a, b)]
    assert files[0].isdisjoint(files[1]) and len(files[0] | files[1]) == 5  # whole files per job
    assert sorted(t.id for t in a + b) == sorted(f"f{f}r{r}" for f in range(5) for r in range(4))
    assert sa["records_read"] + sb["records_read"] == 20 and sa["shard_by"] == "files"
    merged = sh.merge_metrics([{**sa, "texts_synthesized": len(a)}, {**sb, "texts_synthesized": len(b)}])
    assert merged["records_read"] == 20 and merged["shard_by"] == "files"
    capped, st = job(1, max_texts=5)
    assert len(capped) == 3 and st["records_read"] == 3
    with pytest.raises(ValueError, match="needs at least num_shards=6 data files, the dataset has 5"):
        job(0, n=6)


def test_bench_runs_on_a_fresh_clone(tmp_path):
    """bench/bench_synthesize.py with its own random-init tiny model (smoke: tiny sizes)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_synthesize", REPO / "bench" / "bench_synthesize.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--model", "random", "--texts", "4", "--parts", "naive,batched,templify", "--repeats", "2",
                       "--max-new-tokens", "4", "--batch-size", "4", "--templify-seconds", "0.05",
                       "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("synthesize_cpu_*.json")
    res = json.loads(path.read_text())
    assert set(res["backends"]) == {"naive", "batched@4"} and res["model"] == "random-init tiny"
    assert res["backends"]["naive"]["engine_calls_per_repeat"] == 4 and res["backends"]["batched@4"]["texts"] == 4
    assert res["speedup_vs_naive"]["naive"] == 1.0 and res["templify"]["texts_per_s"] > 0
    assert {"cpu_model", "cpu_count", "torch", "transformers"} <= set(res["hardware"]) and res["command"]


def test_bench_in_memory_model_path(tmp_path, monkeypatch):
    """The GPU bench's path (`--shape mistral-7b`: a random Mistral built in memory, handed to the
    transformers backends as a model object; vLLM skipped) on a small shape of the same kind."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_synthesize", REPO / "bench" / "bench_synthesize.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    small = dict(bench.SHAPES["mistral-7b"], hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                 num_kv_heads=2, vocab_size=2100)
    monkeypatch.setitem(bench.SHAPES, "mistral-7b", small)
    assert bench.main(["--model", "random", "--shape", "mistral-7b", "--texts", "4", "--parts", "naive,batched,vllm",
                       "--repeats", "1", "--max-new-tokens", "4", "--batch-size", "4", "--out", str(tmp_path)]) == 0
    res = json.loads(next(tmp_path.glob("synthesize_cpu_*.json")).read_text())
    assert res["model"] == "random-init mistral-7b" and res["backends"]["batched@4"]["texts"] == 4
    assert "saved model" in res["backends"]["vllm"]["skipped"]


# ----------------------------------------------------------------------------- merge at scale

def _two_shard_job(tmp_path):
    _corpus(tmp_path / "c.jsonl")
    tok = WordTok()
    work, stage_dir = tmp_path / "w", tmp_path / "s"
    shards = [_cfg(corpus=str(tmp_path / "c.jsonl"), rounds=2, num_shards=2, shard_index=i) for i in (0, 1)]
    for c in shards:
        ctx, eng, m = _job(work, stage_dir, c, tok)
        sh.finish_shard(ctx, c, m, eng, merge=False)
    return ctx, shards, work, stage_dir


def _pandas_concat_csv(paths):
    """What the merge wrote before it streamed: every shard read with pandas, concatenated."""
    import io as _io

    import pandas as pd

    df = pd.concat([pd.read_csv(p).assign(shard=i) for i, p in enumerate(paths)], ignore_index=True)
    buf = _io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue().encode()


def test_merged_stats_are_byte_identical_to_the_pandas_concatenation(tmp_path):
    ctx, shards, work, stage_dir = _two_shard_job(tmp_path)
    paths = [sh.shard_dir(work, c) / "synthesis_stats.csv" for c in shards]
    want = _pandas_concat_csv(paths)
    merged = sh.merge_shards(ctx, shards[1], "m")
    assert (stage_dir / "synthesis_stats.csv").read_bytes() == want
    # the figure's counts equal those of the concatenated frame
    import pandas as pd

    df = pd.read_csv(stage_dir / "synthesis_stats.csv")
    tally = synth_stats.merge_stats_csv([(i, p) for i, p in enumerate(paths)], tmp_path / "again.csv")
    ref = synth_stats.stats_tally(df)
    assert {k: int(v) for k, v in ref["pairs"].items()} == tally["pairs"]
    assert ref["mode"] == tally["mode"] and ref["layout"] == tally["layout"] and sum(tally["mode"].values())
    assert list(ref["tpp"][0]) == list(tally["tpp"][0]) and list(ref["tpp"][1]) == list(tally["tpp"][1])
    assert merged["texts_synthesized"] == len(df)
    # quoted fields (commas, quotes, newlines) and empty cells survive unchanged
    tricky = tmp_path / "tricky.csv"
    tricky.write_text(paths[0].read_text().splitlines()[0] + "\n"
                      + '"a,b",general,0,0,"x ""q""\ny",False,0,False,False,False,5,7,3,1,0,0,7.25,,,0,,0,0\n')
    assert synth_stats.merge_stats_csv([(0, tricky)], tmp_path / "t.csv") and \
        (tmp_path / "t.csv").read_bytes() == _pandas_concat_csv([tricky])


def test_merge_streams_stats_without_loading_every_row(tmp_path, monkeypatch):
    """400 shards hold ~40M stat rows: the merge must not read them into one DataFrame. Each
    shard's stats are inflated to 60k rows; the merge may not call pandas.read_csv/concat and
    its peak Python memory stays far below the rows' size."""
    import tracemalloc

    import matplotlib.pyplot  # noqa: F401  (imported outside the measurement)
    import pandas as pd

    ctx, shards, work, stage_dir = _two_shard_job(tmp_path)
    sh.merge_shards(ctx, shards[1], "m")  # warm-up: matplotlib / pyarrow load their caches once
    paths = [sh.shard_dir(work, c) / "synthesis_stats.csv" for c in shards]
    for p in paths:
        head, *body = p.read_text().splitlines(keepends=True)
        p.write_text(head + "".join(body * (60_000 // len(body) + 1)))
    size = sum(p.stat().st_size for p in paths)
    assert size > 6_000_000
    want = _pandas_concat_csv(paths)

    def forbidden(*a, **k):
        raise AssertionError("merge loaded shard stats with pandas")

    monkeypatch.setattr(pd, "read_csv", forbidden)
    monkeypatch.setattr(pd, "concat", forbidden)
    tracemalloc.start()
    try:
        sh.merge_shards(ctx, shards[1], "m")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (stage_dir / "synthesis_stats.csv").read_bytes() == want
    assert (stage_dir / "synthesis.png").exists()
    assert peak < size / 2, (peak, size)  # reading them with pandas peaked at ~4x size

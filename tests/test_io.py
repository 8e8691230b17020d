"""ipt_utils.io: atomic writes, located errors, streamed readers and writers."""
import json
import os
import stat

import pytest

from ipt_utils import io


def test_atomic_write_keeps_the_old_file_on_error_and_uses_the_umask(tmp_path):
    path = tmp_path / "out.json"
    io.write_json(path, {"a": 1})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~io._umask()  # not mkstemp's 0600
    with pytest.raises(RuntimeError):
        with io.atomic_open(path) as f:
            f.write('{"half": ')
            raise RuntimeError("killed")
    assert io.read_json(path) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_saved_model_dir_is_not_private(tmp_path):
    from ipt_utils import assets

    assets.build_tiny_tokenizer(tmp_path / "tok", vocab_size=300)
    assert stat.S_IMODE(os.stat(tmp_path / "tok").st_mode) == io.DIR_MODE  # not mkdtemp's 0700


def test_jsonl_errors_name_the_real_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"x\.jsonl:4: expected a JSON object, got list"):
        list(io.iter_local_records(path))
    path.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(ValueError, match=r"x\.jsonl:3: invalid JSON"):
        io.read_jsonl(path)
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert [w for w, _ in io.iter_local_records(path)] == [f"{path}:1", f"{path}:3"]


def test_write_parquet_streams_row_groups(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.string()), ("n", pa.int64())])
    rows = [{"id": str(i), "n": i} for i in range(10)]
    assert io.write_parquet(tmp_path / "a.parquet", iter(rows), schema, batch_rows=4) == 10
    f = pq.ParquetFile(tmp_path / "a.parquet")
    assert f.metadata.num_row_groups == 3 and f.read().to_pylist() == rows
    assert [rec for _, rec in io.iter_local_records(tmp_path / "a.parquet")] == rows
    assert io.write_parquet(tmp_path / "e.parquet", [], schema) == 0  # empty, but a valid file with the schema
    assert pq.read_table(tmp_path / "e.parquet").schema == schema


def test_record_id_prefers_the_id_field():
    assert io.record_id({"id": 3}, "x") == "3"
    assert io.record_id({}, "x") == io.record_id({"url": "other"}, "x") != io.record_id({}, "y")
    assert json.dumps(io.record_id({}, "x")).startswith('"sha1:')

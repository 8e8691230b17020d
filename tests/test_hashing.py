"""hashing.digest / file_digest and the keys built on them. The fixed values are what these keys
were before they shared one helper: a changed value means finished stages, caches, shards and
record ids on disk stop matching."""
import hashlib
import os

from ipt_utils import assets, hashing, io, manifest, packing, rule_based


def test_digest_is_the_standard_hash_of_the_concatenated_parts():
    assert hashing.digest("abc", n=None) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert hashing.digest(["a", b"b", "c"], n=None) == hashing.digest(b"abc", n=None)
    assert hashing.digest(iter(["ab", "c"])) == hashing.digest("abc")[:16] == hashing.digest("abc", n=16)
    assert hashing.digest("Ünï", n=20, algo="sha1") == hashlib.sha1("Ünï".encode("utf-8")).hexdigest()[:20]
    assert hashing.digest([]) == hashlib.sha256().hexdigest()[:16]


def test_file_digest_reads_blocks(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(os.urandom(3 * (1 << 20) + 5))  # over several 1 MiB blocks
    assert hashing.file_digest(f) == hashlib.sha256(f.read_bytes()).hexdigest()
    assert hashing.file_digest(f, n=12) == hashlib.sha256(f.read_bytes()).hexdigest()[:12]


def test_keys_on_disk_keep_their_values(tmp_path):
    assert manifest.params_hash("synthesize", {"seed": 1, "device": "cpu"}, {"rounds": 2, "model": "tiny"}) \
        == "e61b60bcfb923d95"
    assert manifest.completion_key("0123abcd", ["01_synth_tune"], tmp_path) == "999233ff9ed17fdf"
    f = tmp_path / "x.bin"
    f.write_bytes(b"ipt" * 1000)
    assert packing.file_digest(f) == "fde1f28c9fad13c0549320f779f99f8857ea46c838d7fadfbae0df487faba731"
    assert packing.cache_key({"b": 2, "a": [1, 2]}, "tok", 7, None, f) == "46ee9dd2c79ef9a2"
    assert io.record_id({"text": "x"}, "Ünïcode text\n") == "sha1:c7bb9817f8a5ef4a8f73"
    assert io.record_id({"id": 7}, "whatever") == "7"
    assert rule_based._rng("some text", 3, "nli").random() == 0.6489890645500654
    assert rule_based.version() == "rule_based-" + hashlib.sha256(rule_based.VERSION_SRC.read_bytes()).hexdigest()[:12]


def test_model_fingerprint_follows_weights_and_configs(tmp_path):
    for name in ("a.json", "b.safetensors", "c.txt"):
        (tmp_path / name).write_text(name)
        os.utime(tmp_path / name, ns=(10 ** 18, 10 ** 18))
    key = assets.model_fingerprint(str(tmp_path))
    assert key == "bc129db69f088d04"
    (tmp_path / "c.txt").write_text("other")  # neither weights nor config
    assert assets.model_fingerprint(str(tmp_path)) == key
    os.utime(tmp_path / "b.safetensors", ns=(10 ** 18, 10 ** 18 + 1))
    assert assets.model_fingerprint(str(tmp_path)) != key
    assert assets.model_fingerprint("org/name") == "org/name"  # a hub name stands for itself

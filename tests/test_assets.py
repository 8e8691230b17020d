"""Tiny offline assets: deterministic, reloadable offline, vLLM-compatible shapes."""
import hashlib

import pytest

from ipt_utils import assets
from ipt_utils.assets import ModelShape

SHAPE = ModelShape(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2, num_kv_heads=2,
                   max_position_embeddings=512, vocab_size=0)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tok_dirs(tmp_path_factory):
    a, b = tmp_path_factory.mktemp("tok_a"), tmp_path_factory.mktemp("tok_b")
    assets.build_tiny_tokenizer(a / "tok")
    assets.build_tiny_tokenizer(b / "tok")
    return a / "tok", b / "tok"


def test_tokenizer_deterministic_and_offline(tok_dirs, monkeypatch):
    a, b = tok_dirs
    assert _sha(a / "tokenizer.json") == _sha(b / "tokenizer.json")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(a)
    for t in assets.SPECIAL_TOKENS:
        assert tok.convert_tokens_to_ids(t) != tok.unk_token_id or t == "<unk>"
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")
    # markup tokens are single, non-special tokens: decoding keeps them
    for t in assets.MARKUP_TOKENS:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1
        assert tok.decode(ids, skip_special_tokens=True) == t
    text = "Revenue rose 12% in 2023 because demand grew."
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert len(tok) <= assets.TINY_VOCAB_SIZE + len(assets.MARKUP_TOKENS)


def test_tiny_model_deterministic_and_reloads(tok_dirs, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dirs[0])
    assets.build_tiny_model(tmp_path / "m1", SHAPE, tok, seed=3)
    assets.build_tiny_model(tmp_path / "m2", SHAPE, tok, seed=3)
    assert _sha(tmp_path / "m1" / "model.safetensors") == _sha(tmp_path / "m2" / "model.safetensors")
    assert not list((tmp_path / "m1").glob("*.bin"))  # safetensors only
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m1", use_safetensors=True)
    assert model.config.model_type == "mistral"
    assert model.config.head_dim >= 32 and model.config.vocab_size == len(tok)
    assets.build_tiny_model(tmp_path / "m3", SHAPE, tok, seed=4)
    assert _sha(tmp_path / "m1" / "model.safetensors") != _sha(tmp_path / "m3" / "model.safetensors")


def test_model_shape_checks():
    with pytest.raises(ValueError, match="divisible"):
        ModelShape(hidden_size=96, intermediate_size=128, num_layers=1, num_heads=5, num_kv_heads=1,
                   max_position_embeddings=128, vocab_size=0)
    assert SHAPE.head_dim == 32

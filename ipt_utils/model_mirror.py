"""Offline mirrors of the hub models the GPU profiles load by name (rehearsals).

`build_model(root, repo)` writes root/models/<repo>: a tiny random-weight model of the real
architecture class, with a tokenizer of the same kind as the real one (trained on the
fixtures), config.json, generation_config.json and safetensors sharded as on the hub. The
released synthesizer's mirror is briefly taught the synthesizer's markup, so a rehearsal
yields parseable pairs. What every mirror shares: ipt_utils/hub_mirror.py.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .assets import TOKENIZER_CORPUS, _corpus_lines
from .format import render_example
from .hub_mirror import build_atomically, fixture_rows, known_repo, model_dir
from .packing import IGNORE


# =========================================================================== tokenizers
# Tiny tokenizers of the same KIND as the real repos' (model type, pre-tokenizer, special
# tokens and their ids' placement, BOS/EOS/pad behaviour), trained on the fixtures in
# milliseconds. Written as tokenizer.json + tokenizer_config.json + special_tokens_map.json.

_HUGE = 1000000000000000019884624838656  # model_max_length the hub configs carry when unset
# Llama-3's pre-tokenizer split (tiktoken style: contractions, letters, 1-3 digits, punctuation).
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_BLOOM_SPLIT = r" ?[^(\s|[.,!?…。，、।۔،])]+"


def _train_bpe(pre_tokenizer, vocab_size: int, special_tokens: list[str], byte_level: bool):
    """A BPE Tokenizer trained on the fixture texts (special_tokens get the first ids). Without
    byte_level, printable ASCII is still in the alphabet (a real 32k vocab has every one)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    alphabet = pre_tokenizers.ByteLevel.alphabet() if byte_level else [chr(c) for c in range(33, 127)]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens,
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(_corpus_lines(TOKENIZER_CORPUS), trainer=trainer)
    return tok


def _bpe_parts(tok) -> tuple[dict, list]:
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def _added(content: str, special: bool = True) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": special}


def _save_tokenizer(tok, out: Path, config: dict, special_map: dict) -> None:
    tok.save(str(out / "tokenizer.json"))
    decoder = {str(tok.token_to_id(t)): _added(t) for t in _specials_of(tok)}
    cfg = {**config, "added_tokens_decoder": decoder}
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    (out / "special_tokens_map.json").write_text(
        json.dumps({k: _added(v) for k, v in special_map.items()}, indent=2) + "\n", encoding="utf-8")


def _specials_of(tok) -> list[str]:
    return [a["content"] for a in json.loads(tok.to_str())["added_tokens"] if a["special"]]


def _sentencepiece_kind(out: Path, vocab_size: int = 2048) -> None:
    """Mistral / Llama-2 kind: BPE over `▁`-marked text with byte fallback (`<0x00>`..`<0xFF>`),
    `<unk>`=0 `<s>`=1 `</s>`=2, BOS added by the post-processor, no pad token; markup such as
    `<CON>` is plain text (no added tokens), as on the real Mistral tokenizer."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    specials = ["<unk>", "<s>", "</s>"]
    trained = _train_bpe(pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
                         vocab_size - len(specials) - 256, [], byte_level=False)
    vocab, merges = _bpe_parts(trained)
    full = {t: i for i, t in enumerate(specials + [f"<0x{b:02X}>" for b in range(256)])}
    for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]):
        full.setdefault(t, len(full))
    tok = Tokenizer(models.BPE(vocab=full, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    _save_tokenizer(tok, out, {
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "pad_token": None, "clean_up_tokenization_spaces": False, "legacy": True,
        "model_max_length": _HUGE, "spaces_between_special_tokens": False, "tokenizer_class": "LlamaTokenizer",
        "use_default_system_prompt": False, "additional_special_tokens": [], "sp_model_kwargs": {},
    }, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})


def _llama3_specials() -> list[str]:
    """The 256 special tokens after the BPE vocab, in Llama-3's order."""
    names = ["<|begin_of_text|>", "<|end_of_text|>"] + [f"<|reserved_special_token_{i}|>" for i in range(4)]
    names += ["<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_4|>", "<|eot_id|>"]
    return names + [f"<|reserved_special_token_{i}|>" for i in range(5, 5 + 256 - len(names))]


def _llama3_kind(out: Path, vocab_size: int = 2048) -> None:
    """Llama-3 kind: tiktoken-style byte-level BPE (no unk), 256 special tokens placed after the
    vocab (`<|begin_of_text|>` first), BOS added by a post-processor, no pad token."""
    from tokenizers import AddedToken, Regex, decoders, pre_tokenizers, processors

    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok = _train_bpe(pre, vocab_size - 256, [], byte_level=True)
    tok.decoder = decoders.ByteLevel()
    specials = _llama3_specials()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    bos = tok.token_to_id(specials[0])
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{specials[0]} $A", pair=f"{specials[0]} $A {specials[0]} $B",
                                      special_tokens=[(specials[0], bos)])])
    _save_tokenizer(tok, out, {
        "bos_token": specials[0], "eos_token": specials[1], "clean_up_tokenization_spaces": True,
        "model_input_names": ["input_ids", "attention_mask"], "model_max_length": _HUGE,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }, {"bos_token": specials[0], "eos_token": specials[1]})


def _neox_kind(out: Path, vocab_size: int = 2048) -> None:
    """GPT-NeoX (Pythia) kind: byte-level BPE, `<|endoftext|>`=0 is bos = eos = unk,
    `<|padding|>`=1 exists but is not the pad token; nothing added around the text."""
    from tokenizers import AddedToken, decoders, normalizers, pre_tokenizers, processors

    specials = ["<|endoftext|>", "<|padding|>"]
    tok = _train_bpe(pre_tokenizers.ByteLevel(add_prefix_space=False), vocab_size, specials, byte_level=True)
    tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    eot = specials[0]
    _save_tokenizer(tok, out, {
        "add_prefix_space": False, "bos_token": eot, "eos_token": eot, "unk_token": eot,
        "clean_up_tokenization_spaces": True, "model_max_length": _HUGE, "tokenizer_class": "GPTNeoXTokenizer",
    }, {"bos_token": eot, "eos_token": eot, "unk_token": eot})


def _bloom_kind(out: Path, vocab_size: int = 2048) -> None:
    """BLOOM kind: byte-level BPE with `<unk>`=0 `<s>`=1 `</s>`=2 `<pad>`=3, a pad token, left
    padding, and no BOS/EOS added around the text."""
    from tokenizers import AddedToken, Regex, decoders, pre_tokenizers, processors

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(_BLOOM_SPLIT), behavior="isolated"),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok = _train_bpe(pre, vocab_size, specials, byte_level=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    _save_tokenizer(tok, out, {
        "add_prefix_space": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "pad_token": "<pad>", "padding_side": "left", "tokenizer_class": "BloomTokenizerFast",
        "model_max_length": _HUGE, "clean_up_tokenization_spaces": False,
    }, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"})


TOKENIZER_KINDS = {"sentencepiece": _sentencepiece_kind, "llama3": _llama3_kind,
                   "neox": _neox_kind, "bloom": _bloom_kind}


# =========================================================================== models

@dataclass(frozen=True)
class ModelSpec:
    arch: str  # config class family: mistral | llama | gpt_neox | bloom
    tokenizer: str  # a TOKENIZER_KINDS key
    shards: int  # safetensors files on the hub (1 = model.safetensors, else an index + N files)
    dtype: str  # the dtype the hub weights are stored in
    config: dict  # architecture fields beyond the tiny sizes (as in the real config.json)
    generation: dict  # generation_config.json fields besides bos/eos
    writes_markup: bool = False  # a synthesizer: briefly taught the markup, so a rehearsal yields pairs


TINY = {"hidden_size": 128, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 256}
_MISTRAL = {"max_position_embeddings": 32768, "rope_theta": 10000.0, "sliding_window": 4096,
            "rms_norm_eps": 1e-5, "tie_word_embeddings": False}

MODELS: dict[str, ModelSpec] = {
    "mistralai/Mistral-7B-v0.1": ModelSpec("mistral", "sentencepiece", 2, "bfloat16", _MISTRAL, {}),
    # A Mistral-7B fine-tune: shard count (3) and dtype unverified.
    "instruction-pretrain/instruction-synthesizer": ModelSpec("mistral", "sentencepiece", 3, "bfloat16", _MISTRAL, {},
                                                              writes_markup=True),
    "meta-llama/Meta-Llama-3-8B": ModelSpec("llama", "llama3", 4, "bfloat16", {
        "max_position_embeddings": 8192, "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False}, {}),
    # Single model.safetensors; fp16 storage unverified.
    "EleutherAI/pythia-1b": ModelSpec("gpt_neox", "neox", 1, "float16", {
        "max_position_embeddings": 2048, "rotary_pct": 0.25, "rotary_emb_base": 10000,
        "use_parallel_residual": True, "tie_word_embeddings": False}, {}),
    # Single model.safetensors, tied embeddings, ALiBi (no positions); fp16 storage unverified.
    "bigscience/bloom-3b": ModelSpec("bloom", "bloom", 1, "float16", {"tie_word_embeddings": True},
                                     {"pad_token_id": 3}),
}


def _model_config(spec: ModelSpec, tok_dir: Path):
    """The tiny transformers config of `spec`, token ids read from the written tokenizer."""
    from transformers import BloomConfig, GPTNeoXConfig, LlamaConfig, MistralConfig
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    cfg_tok = json.loads((tok_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    bos, eos = tok.token_to_id(cfg_tok["bos_token"]), tok.token_to_id(cfg_tok["eos_token"])
    vocab = tok.get_vocab_size()
    t = TINY
    if spec.arch in ("mistral", "llama"):
        cls = MistralConfig if spec.arch == "mistral" else LlamaConfig
        return cls(vocab_size=vocab, hidden_size=t["hidden_size"], intermediate_size=t["intermediate_size"],
                   num_hidden_layers=t["num_layers"], num_attention_heads=t["num_heads"],
                   num_key_value_heads=t["num_kv_heads"], head_dim=t["hidden_size"] // t["num_heads"],
                   bos_token_id=bos, eos_token_id=eos, **spec.config)
    if spec.arch == "gpt_neox":
        # Pythia's embedding matrix is padded beyond the tokenizer (50304 > 50277 tokens).
        return GPTNeoXConfig(vocab_size=-(-vocab // 128) * 128 + 128, hidden_size=t["hidden_size"],
                             intermediate_size=4 * t["hidden_size"], num_hidden_layers=t["num_layers"],
                             num_attention_heads=t["num_heads"], bos_token_id=bos, eos_token_id=eos, **spec.config)
    if spec.arch == "bloom":
        return BloomConfig(vocab_size=-(-vocab // 128) * 128, hidden_size=t["hidden_size"], n_layer=t["num_layers"],
                           n_head=t["num_heads"], bos_token_id=bos, eos_token_id=eos, pad_token_id=3, **spec.config)
    raise ValueError(f"unknown architecture {spec.arch!r}")


def _reshard(out: Path, shards: int) -> None:
    """Split model.safetensors into model-0000k-of-0000N.safetensors + model.safetensors.index.json,
    the layout of the real multi-file checkpoints (contiguous groups of near-equal bytes)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    single = out / "model.safetensors"
    with safe_open(str(single), "pt") as f:
        meta = f.metadata() or {"format": "pt"}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    names = list(tensors)
    if len(names) < shards:
        raise ValueError(f"{len(names)} tensors cannot fill {shards} shards")
    sizes = [tensors[n].numel() * tensors[n].element_size() for n in names]
    total, cum, starts = sum(sizes), 0, [0]
    for i, size in enumerate(sizes):  # a shard starts where the bytes so far pass k/N of the total
        if len(starts) < shards and cum >= total * len(starts) / shards and i > starts[-1]:
            starts.append(i)
        cum += size
    while len(starts) < shards:  # too few boundaries (one huge tensor): split off the tail
        starts.append(len(names) - (shards - len(starts)))
    starts = sorted(set(starts))
    groups = [names[a:b] for a, b in zip(starts, starts[1:] + [len(names)])]
    weight_map = {}
    for k, group in enumerate(groups, start=1):
        fname = f"model-{k:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n] for n in group}, str(out / fname), metadata=meta)
        weight_map.update({n: fname for n in group})
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    single.unlink()


def _teach_markup(model, tok_dir: Path, seed: int, steps: int = 400, batch: int = 8, max_len: int = 192) -> None:
    """A few hundred short fp32 steps on the shipped tuning fixtures in the synthesizer's markup,
    so the tiny "released synthesizer" writes parseable pairs and a rehearsal exercises chains,
    histories and documents, not only empty generations (about 20 s on 2 idle cores)."""
    import random

    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    rows = [r for r in fixture_rows("synth_collection.jsonl") if r.get("QA_list")]
    seqs = [tok(render_example(r["context"], [(qa["Q"], qa["A"]) for qa in r["QA_list"]]),
                add_special_tokens=False)["input_ids"][:max_len] for r in rows]
    rng, opt = random.Random(seed), torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        chosen = rng.sample(seqs, min(batch, len(seqs)))
        n = max(map(len, chosen))
        ids = torch.tensor([s + [tok.eos_token_id] * (n - len(s)) for s in chosen])
        labels = torch.tensor([s + [IGNORE] * (n - len(s)) for s in chosen])
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


def _write_model(out: Path, spec: ModelSpec, seed: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    TOKENIZER_KINDS[spec.tokenizer](out)
    config = _model_config(spec, out)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    if spec.writes_markup:
        _teach_markup(model, out, seed)
    model = model.to(getattr(torch, spec.dtype))
    model.generation_config.bos_token_id = config.bos_token_id
    model.generation_config.eos_token_id = config.eos_token_id
    for k, v in spec.generation.items():
        setattr(model.generation_config, k, v)
    model.save_pretrained(out, safe_serialization=True, max_shard_size="100GB")
    if spec.shards > 1:
        _reshard(out, spec.shards)


def build_model(root, repo: str, *, seed: int = 0) -> Path:
    """Write (or reuse) a tiny random-weight mirror of model `repo` under root/models/<repo>:
    the real architecture class and tokenizer kind, config.json, generation_config.json,
    safetensors sharded as on the hub, tokenizer.json + tokenizer_config.json + special_tokens_map.json."""
    spec = known_repo("model", MODELS, repo)
    return build_atomically(model_dir(root, repo), {"repo": repo, "seed": seed},
                            lambda d: _write_model(d, spec, seed))

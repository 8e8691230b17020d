"""2-process `accelerate launch` of the training stages with the shipped FSDP config, on CPU (gloo).

Each test launches real processes through ipt_utils.launch (IPT_NUM_PROCESSES=2), so the
FSDP paths run for real: wrapping by the model's own layer class, sharded checkpoints and
resume, the gathered final save, one init-model build, and a failing rank's traceback in
the raised error.
"""
import pytest

from ipt_utils import assets, collection, instruct_tune, launch, pretrain, synth_tune
from ipt_utils.schema import REPO_ROOT
from ipt_utils.registry import RunParams
from ipt_utils.stage import StageContext

from test_instruct_tune import _tune_setup
from test_instruct_tune import env as tune_env  # noqa: F401 - fixture
from test_pretrain import _setup as _pretrain_setup
from test_pretrain import inputs  # noqa: F401 - fixture
from test_synth_tune import _cfg as _synth_cfg
from test_synth_tune import _ctx as _synth_ctx

FSDP = "params/accelerate/fsdp.yaml"  # the shipped config: FSDP2, bf16 (turned off on CPU), 8 processes
# each launch costs 20-60 s on 2 shared cores; together well over 3 minutes: the launches are `slow`
launched = pytest.mark.slow


@pytest.fixture(autouse=True)
def two_processes(monkeypatch):
    monkeypatch.setenv(launch.NUM_PROCESSES_ENV, "2")
    monkeypatch.delenv(launch.CRASH_ENV, raising=False)


def _log(ctx) -> str:
    return (ctx.work / "launch.log").read_text()


def _build_llama(out_dir, tokenizer):
    """A tiny random LlamaForCausalLM (same sizes as the tiny Mistral, head_dim 32)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, head_dim=32, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    assets.save_model(LlamaForCausalLM(config), tokenizer, out_dir)
    return str(out_dir)


def _stage01(tmp_path, arch: str, method: str, dtype: str = "float32", **over):
    import dataclasses

    ctx = _synth_ctx(tmp_path)
    ctx.run = dataclasses.replace(ctx.run, dtype=dtype)
    if arch == "llama":
        over["base_model"] = _build_llama(tmp_path / "llama", assets.tiny_tokenizer(ctx))
    cfg = _synth_cfg(tmp_path, **{"method": method, "accelerate_config": FSDP, "max_steps": 4, "save_steps": 2,
                                  **over})
    return ctx, cfg


def _notebook_flow(ctx, cfg, monkeypatch):
    """What the 01 notebook does with accelerate_config set; no model is loaded in this process."""
    from transformers import AutoModelForCausalLM

    def no_load(*a, **k):
        raise AssertionError("the notebook's process loaded a model")

    with monkeypatch.context() as m:
        m.setattr(AutoModelForCausalLM, "from_pretrained", no_load)
        m.setattr(assets, "load_causal_lm", no_load)
        examples, _ = collection.load_collection(cfg)
        train, _, _ = collection.split_examples(examples, cfg, ctx.seed)
        tok = synth_tune.base_tokenizer(ctx, cfg)
        seqs, _ = collection.build_sequences(tok, train, cfg.max_seq_len, ctx.seed)
        return synth_tune.train(ctx, cfg, seqs, None, tok), tok


def _check_saved(ctx, cfg, tok, model_type: str):
    """The final model reloads, generates, and stage 02's engine runs on it."""
    from types import SimpleNamespace

    import torch
    from transformers import AutoModelForCausalLM

    from ipt_utils import generation

    out = ctx.work / "model"
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True)
    assert model.config.model_type == model_type
    ids = torch.tensor([tok("<s><CON> Rain fell. </CON>", add_special_tokens=False)["input_ids"]])
    gen = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert gen.shape[1] > ids.shape[1]
    gen_cfg = SimpleNamespace(backend="transformers", batch_size=2, max_new_tokens=4)
    engine = generation.make_engine(str(out), tok, gen_cfg, device="cpu")
    assert len(engine([ids[0].tolist()])) == 1
    engine.close()
    base = AutoModelForCausalLM.from_pretrained(synth_tune.base_model_dir(ctx, cfg), use_safetensors=True)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(model.state_dict()[q], base.state_dict()[q])  # trained (LoRA: merged)
    return model


@launched
@pytest.mark.timeout(600)
# bfloat16: the GPU profiles' run.dtype; on CPU the launch turns mixed precision off and the Trainer must agree
@pytest.mark.parametrize("arch,method,dtype", [("mistral", "lora", "float32"), ("llama", "full", "bfloat16"),
                                               ("llama", "lora", "float32")])
def test_stage01_fsdp_two_processes(tmp_path, monkeypatch, arch, method, dtype):
    ctx, cfg = _stage01(tmp_path, arch, method, dtype)
    metrics, tok = _notebook_flow(ctx, cfg, monkeypatch)
    assert metrics["steps"] == 4 and metrics["resumed_from_step"] == 0 and metrics["method"] == method
    log = _log(ctx)
    assert "2 process(es) (env IPT_NUM_PROCESSES)" in log and "DistributedType.FSDP" in log
    assert (ctx.stage_dir / "train_log.csv").exists()
    _check_saved(ctx, cfg, tok, arch)


@launched
@pytest.mark.timeout(600)
def test_stage01_killed_rank_resumes(tmp_path, monkeypatch):
    ctx, cfg = _stage01(tmp_path, "mistral", "full", max_steps=6)
    monkeypatch.setenv(launch.CRASH_ENV, "2")  # rank 1 os._exit()s right after the step-2 checkpoint
    with pytest.raises(launch.LaunchError, match="launch.log"):
        _notebook_flow(ctx, cfg, monkeypatch)
    ckpts = list(ctx.work.glob("checkpoints-*/checkpoint-2"))
    assert ckpts and any(ckpts[0].glob("*fsdp*")), "expected a sharded FSDP checkpoint at step 2"
    assert not (ctx.work / "model").exists()
    monkeypatch.delenv(launch.CRASH_ENV)
    metrics, tok = _notebook_flow(ctx, cfg, monkeypatch)
    assert metrics["resumed_from_step"] == 2 and metrics["steps"] == 6
    _check_saved(ctx, cfg, tok, "mistral")


@launched
@pytest.mark.timeout(600)
def test_pretrain_scratch_init_built_once_and_resumes(tmp_path, monkeypatch, inputs):  # noqa: F811
    from transformers import AutoModelForCausalLM

    ctx, cfg = _pretrain_setup(tmp_path, inputs, arms=["vanilla"], train_tokens=6 * 512, save_steps=3,
                               accelerate_config=FSDP)
    monkeypatch.setenv(launch.CRASH_ENV, "3")
    with pytest.raises(launch.LaunchError):
        pretrain.train_arms(ctx, cfg, {})
    assert _log(ctx).count("[pretrain] built the init model") == 1  # one rank built it, the other waited
    assert list((ctx.work / "vanilla").glob("ckpt-*/step-0000003/trainer_state.json"))
    monkeypatch.delenv(launch.CRASH_ENV)
    metrics = pretrain.train_arms(ctx, cfg, {})
    m = metrics["arms"]["vanilla"]
    assert m["resumed_from"] == 3 and m["steps"] == 6 and m["n_devices"] == 2
    assert "[pretrain] built the init model" not in _log(ctx)
    model = AutoModelForCausalLM.from_pretrained(ctx.work / "vanilla" / "model", use_safetensors=True)
    assert model.config.model_type == "mistral"
    assert len(pretrain.loss_frame(ctx, cfg)) == 6


@launched
@pytest.mark.timeout(600)
def test_failing_rank_traceback_in_error_then_resume(tmp_path, monkeypatch, capfd, tune_env):  # noqa: F811
    ctx, cfg = _tune_setup(tune_env, tmp_path, arms=("vanilla",), accelerate_config=FSDP, max_steps=4,
                           save_steps=2, eval_every=4)
    monkeypatch.setenv(launch.CRASH_ENV, "2:raise")
    with pytest.raises(launch.LaunchError) as err:
        instruct_tune.tune_arms(ctx, cfg)
    msg = str(err.value)
    assert "rank-1 failed first" in msg and "Traceback (most recent call last)" in msg
    assert "RuntimeError: injected failure at step 2 on rank 1" in msg
    assert str(ctx.work / "launch.log") in msg
    assert "injected failure at step 2 on rank 1" in capfd.readouterr().out  # streamed to the notebook
    monkeypatch.delenv(launch.CRASH_ENV)
    metrics = instruct_tune.tune_arms(ctx, cfg)
    assert metrics["arms"]["vanilla"]["steps"] == 4
    assert (ctx.work / "vanilla" / "model" / "model.safetensors").exists()


@pytest.mark.timeout(60)
def test_num_processes_follows_the_machine(monkeypatch, tmp_path):
    """IPT_NUM_PROCESSES, else the CUDA devices, else the config; mixed precision from the profile."""
    monkeypatch.setenv(launch.NUM_PROCESSES_ENV, "3")
    cmd, n, why = launch.launch_command(FSDP, "ipt_utils.pretrain", tmp_path / "launch.json")
    assert n == 3 and cmd[cmd.index("--num_processes") + 1] == "3" and "IPT_NUM_PROCESSES" in why
    monkeypatch.delenv(launch.NUM_PROCESSES_ENV)
    monkeypatch.setattr(launch, "_cuda_count", lambda: 4)
    cmd, n, _ = launch.launch_command(FSDP, "ipt_utils.pretrain", tmp_path / "launch.json")
    assert n == 4
    monkeypatch.setattr(launch, "_cuda_count", lambda: 0)
    cmd, n, _ = launch.launch_command(FSDP, "ipt_utils.pretrain", tmp_path / "launch.json")
    assert n == 8 and cmd[cmd.index("--mixed_precision") + 1] == "no"
    # one rule for 01, 03 and 04: bf16 only for a bf16 run on CUDA (the config's bf16 is never taken as is)
    run = RunParams(seed=0, work_dir="", device="cuda", offline=True, dtype="bfloat16")
    ctx = StageContext(profile="t", stage="03_pretrain", run_dir=tmp_path, work_root=tmp_path, run=run,
                       interactive=False)
    assert launch.mixed_precision(ctx) == "bf16"
    for device, dtype in (("cpu", "bfloat16"), ("cuda", "float32")):
        ctx.run = RunParams(seed=0, work_dir="", device=device, offline=True, dtype=dtype)
        assert launch.mixed_precision(ctx) == "no"
    monkeypatch.setenv(launch.NUM_PROCESSES_ENV, "two")
    with pytest.raises(ValueError, match="IPT_NUM_PROCESSES"):
        launch.launch_command(FSDP, "ipt_utils.pretrain", tmp_path / "launch.json")


@pytest.mark.timeout(120)
def test_fsdp_config_wraps_by_the_models_own_layers():
    """The shipped config names no layer class: accelerate wraps each model's `_no_split_modules`
    (a fixed MistralDecoderLayer made a Llama fail in `prepare`)."""
    import yaml
    from accelerate.utils import FullyShardedDataParallelPlugin
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    fsdp = yaml.safe_load((REPO_ROOT / FSDP).read_text())["fsdp_config"]
    sizes = dict(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=2, head_dim=32)
    for model, layer in ((MistralForCausalLM(MistralConfig(**sizes)), "MistralDecoderLayer"),
                         (LlamaForCausalLM(LlamaConfig(**sizes)), "LlamaDecoderLayer")):
        plugin = FullyShardedDataParallelPlugin(
            fsdp_version=fsdp["fsdp_version"], auto_wrap_policy=fsdp["fsdp_auto_wrap_policy"],
            transformer_cls_names_to_wrap=fsdp.get("fsdp_transformer_layer_cls_to_wrap"))
        plugin.set_auto_wrap_policy(model)
        assert plugin.transformer_cls_names_to_wrap == [layer]


@pytest.mark.timeout(300)
def test_stage01_in_process_keeps_no_model(tmp_path, monkeypatch):
    """Without accelerate_config `train` loads the base itself and drops it on return, so the
    notebook's kernel holds no model when the synthesizer evaluation starts its engines."""
    import gc
    import weakref

    ctx = _synth_ctx(tmp_path)
    cfg = _synth_cfg(tmp_path, max_steps=2, save_steps=2)
    loaded, real_load = [], synth_tune.load_base_model

    def load(*a, **k):
        model = real_load(*a, **k)
        loaded.append(weakref.ref(model))
        return model

    monkeypatch.setattr(synth_tune, "load_base_model", load)
    examples, _ = collection.load_collection(cfg)
    train, _, _ = collection.split_examples(examples, cfg, ctx.seed)
    tok = synth_tune.base_tokenizer(ctx, cfg)
    seqs, _ = collection.build_sequences(tok, train[:40], cfg.max_seq_len, ctx.seed)
    metrics = synth_tune.train(ctx, cfg, seqs, None, tok)
    assert metrics["steps"] == 2 and (ctx.work / "model" / "model.safetensors").exists()
    gc.collect()
    assert len(loaded) == 1 and loaded[0]() is None

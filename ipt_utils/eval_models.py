"""lm-eval models that score the way the AdaptLLM benchmark code does (stage 05).

The harness hands a multiple-choice task summed log-likelihoods; the authors choose the option
with the lowest MEAN loss per answer token, so each score here also carries the number of
answer tokens it sums over (`OptionScore.n_tokens`, read by tasks/ipt_metrics.py). The token
count comes from the very encoding the model scored, inside the harness's own batched calls.

Truncation as the authors': a multiple-choice input is never cut (a prompt longer than the
context is scored whole and counted in `context_stats`, per task); a generation prompt is
left-truncated to `max_length - max_gen_toks` tokens with its BOS kept (the harness would cut
the BOS away). The vLLM engine cannot score past its `max_model_len`: there an over-long
input is cut from the left, and counted as `truncated`.
"""
from __future__ import annotations

import torch
from lm_eval.models.huggingface import HFLM


class OptionScore(tuple):
    """(loglikelihood, is_greedy) as the harness returns it, plus the answer-token count."""

    n_tokens: int

    def __new__(cls, ll, is_greedy, n_tokens: int):
        obj = super().__new__(cls, (ll, is_greedy))
        obj.n_tokens = int(n_tokens)
        return obj

    def __reduce__(self):  # keep n_tokens through pickling (distributed gathers)
        return (OptionScore, (self[0], self[1], self.n_tokens))


def keep_bos(ids: torch.Tensor, mask: torch.Tensor, keep: int, bos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-truncate a left-padded batch to `keep` tokens, BOS first in every row that was cut.

    A row of n >= keep tokens becomes BOS + its last keep-1 tokens (its own first token is the
    BOS, so a row of exactly `keep` is unchanged); shorter rows lie whole in the last keep-1
    columns and get a padding column (mask 0) in front.
    """
    if ids.shape[1] <= keep:
        return ids, mask
    n = mask.sum(dim=1)
    long_rows = n >= keep
    head_ids = torch.where(long_rows, torch.full_like(n, bos), ids[:, 0]).to(ids.dtype)
    head_mask = long_rows.to(mask.dtype)
    return (torch.cat([head_ids[:, None], ids[:, -(keep - 1):]], dim=1),
            torch.cat([head_mask[:, None], mask[:, -(keep - 1):]], dim=1))


class _AdaptLLMScoring:
    """Mixin over a harness LM (HFLM, VLLM): answer-token counts, no MC cut, counted long inputs."""

    can_extend_context = True  # HF: score inputs longer than max_length whole (rotary positions)

    def _init_stats(self):
        self.context_stats: dict[str, dict] = {}

    def _encode_request(self, context: str, continuation: str):
        if context == "":  # as the harness: the prefix token stands in for an empty context
            cont = self.tok_encode(continuation, add_special_tokens=False)
            return ([self.prefix_token_id], cont) if self.prefix_token_id != cont[0] else (cont[:1], cont[1:])
        return self._encode_pair(context, continuation)

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        limit = self.max_length
        encoded, longest = [], 0
        for req in requests:
            context, continuation = req.args
            ctx_enc, cont_enc = self._encode_request(context, continuation)
            encoded.append(((context, continuation), ctx_enc, cont_enc))
            total = len(ctx_enc) + len(cont_enc)
            longest = max(longest, total)
            st = self.context_stats.setdefault(req.task_name or "?", {
                "requests": 0, "over_context": 0, "docs_over_context": set(), "truncated": 0,
                "longest_tokens": 0, "context_tokens": limit})
            st["requests"] += 1
            st["longest_tokens"] = max(st["longest_tokens"], total)
            if total > limit:
                st["over_context"] += 1
                st["docs_over_context"].add(req.doc_id)
                st["truncated"] += 0 if self.can_extend_context else 1
        if self.can_extend_context and longest > limit:
            # the harness cuts anything over max_length from the left: lift the limit for this call
            saved, self._max_length = self._max_length, longest
            try:
                scores = self._loglikelihood_tokens(encoded, disable_tqdm=disable_tqdm)
            finally:
                self._max_length = saved
        else:
            scores = self._loglikelihood_tokens(encoded, disable_tqdm=disable_tqdm)
        return [OptionScore(ll, greedy, len(enc[2])) for (ll, greedy), enc in zip(scores, encoded)]

    def stats(self) -> dict[str, dict]:
        """Per harness task: requests, inputs over the context (and docs having one), how many
        were cut, the longest input in tokens and the context length."""
        return {t: {**s, "docs_over_context": len(s["docs_over_context"])} for t, s in self.context_stats.items()}


class IptHFLM(_AdaptLLMScoring, HFLM):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_stats()

    def tok_batch_encode(self, strings, padding_side: str = "left", left_truncate_len=None,
                         truncation: bool = False):
        ids, mask = super().tok_batch_encode(strings, padding_side=padding_side, truncation=truncation)
        if left_truncate_len and self.add_bos_token and self.tokenizer.bos_token_id is not None \
                and padding_side == "left":
            return keep_bos(ids, mask, left_truncate_len, self.tokenizer.bos_token_id)
        if left_truncate_len:
            return ids[:, -left_truncate_len:], mask[:, -left_truncate_len:]
        return ids, mask


def make_lm(backend: str, model_args: dict, batch_size: int):
    """The harness model for `backend` ('hf' or 'vllm') with the AdaptLLM scoring rules."""
    if backend == "hf":
        return IptHFLM(batch_size=batch_size, **model_args)
    if backend == "vllm":
        from lm_eval.models.vllm_causallms import VLLM

        class IptVLLM(_AdaptLLMScoring, VLLM):
            can_extend_context = False  # the engine refuses inputs over max_model_len

            def __init__(self, *a, **k):
                super().__init__(*a, **k)
                self._init_stats()

            def _model_generate(self, requests, generate: bool = False, sampling_params=None):
                bos = self.tokenizer.bos_token_id
                if generate and self.add_bos_token and bos is not None:
                    # the harness cut these from the left (BOS lost): BOS + the last n-1 tokens
                    requests = [r if not r or r[0] == bos else [bos] + r[1:] for r in requests]
                return super()._model_generate(requests, generate=generate, sampling_params=sampling_params)

        return IptVLLM(batch_size=batch_size, **model_args)
    raise ValueError(f"evaluate.backend: unknown backend {backend!r} (hf or vllm)")

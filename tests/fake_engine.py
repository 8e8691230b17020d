"""A fast, deterministic stand-in for the synthesizer's model (tests only).

`install` puts `FakeSynthesizer` in place of the vLLM and transformers starters of
ipt_utils.generation (the `fake_synthesizer` fixture in tests/conftest.py does it for one
test); production code has no test backend and reads no test switch. A test that needs the
fake in another process runs this file instead of `python -m ipt_utils`:

    python tests/fake_engine.py DELAY synthesize --profile P --out RUN_DIR ...

(DELAY: seconds each engine call sleeps, to give a kill -9 test a window mid-run).
"""
from __future__ import annotations

import sys
import time
from typing import Callable

from ipt_utils import cli, generation
from ipt_utils.generation import GenOut
from ipt_utils.multiround import Tokenizer


class FakeSynthesizer:
    """Pairs derived from the prompt's new context, `delay` s per call. Texts whose first word
    ends in a digit divisible by 3 get no pairs (chains break)."""

    def __init__(self, tok: Tokenizer, delay: float):
        self.tok, self.delay = tok, delay

    def generate(self, prompts: list[list[int]]) -> list[GenOut]:
        time.sleep(self.delay)
        outs = []
        for ids in prompts:
            words = self.tok.decode(ids).rsplit("<CON>", 1)[-1].replace("</CON>", " ").split()
            first = words[0] if words else "?"
            text = "nothing" if first[-1:] in ("0", "3", "6", "9") else \
                f"<QUE> What does {first} mean? <ANS> {' '.join(words[:4])} </END>\n\n" \
                f"<QUE> How many words? <ANS> {len(words)} </END>"
            outs.append(GenOut(text, len(self.tok.encode(text))))
        return outs


def install(setitem: Callable[[str, Callable], None], delay: float = 0.0, starts: list | None = None) -> None:
    """Replace every model backend's starter with the fake (setitem(name, starter): e.g.
    monkeypatch.setitem bound to generation.STARTERS); each start appends to `starts`."""
    def start(model_path, hf_tokenizer, cfg, seed, device, dtype):
        if starts is not None:
            starts.append(model_path)
        return FakeSynthesizer(Tokenizer(hf_tokenizer), delay)

    for name in ("vllm", "transformers"):
        setitem(name, start)


def main(argv: list[str]) -> int:
    install(generation.STARTERS.__setitem__, delay=float(argv[0]))
    return cli.main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""What a generation backend returns: shared by stage 02's model backends (ipt_utils.synthesize)
and the rule-based one (ipt_utils.rule_based), so neither imports the other for it."""
from __future__ import annotations

from typing import NamedTuple


class GenOut(NamedTuple):
    text: str
    n_tokens: int

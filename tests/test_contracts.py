"""The declared data contracts: the checker catches what it must, and docs/CONTRACTS.md is current."""
from typing import Annotated, NotRequired, TypedDict

import pytest

from ipt_utils import contracts


class _Arm(TypedDict):
    tokens: Annotated[int, "tokens trained on"]
    loss: NotRequired[Annotated[float, "last loss"]]


class _Metrics(TypedDict):
    n: Annotated[int, "items"]
    arms: Annotated[dict[str, _Arm], "one entry per arm"]
    best: NotRequired[_Arm]


def test_problems_names_missing_undeclared_and_nested_keys():
    assert contracts.problems(_Metrics, {"n": 1, "arms": {"a": {"tokens": 3}}}) == []
    assert contracts.problems(_Metrics, {"n": 1, "arms": {"a": {"tokens": 3, "loss": 0.5}}, "best": {"tokens": 1}}) == []
    found = contracts.problems(_Metrics, {"arms": {"a": {"loss": 1.0}, "b": {"tokens": 1, "x": 2}}, "extra": 0,
                                          "best": {}})
    assert found == ["n: missing", "extra: not declared in _Metrics", "arms.a.tokens: missing",
                     "arms.b.x: not declared in _Arm", "best.tokens: missing"]
    assert contracts.problems(_Metrics, {"n": 1, "arms": [1]}) == ["arms: expected an object, got list"]


def test_check_metrics_raises_for_a_registered_stage():
    contracts.METRICS["99_test"] = _Metrics
    try:
        with pytest.raises(contracts.ContractError, match="99_test.*n: missing"):
            contracts.check_metrics("99_test", {"arms": {}})
        contracts.check_metrics("99_test", {"n": 0, "arms": {}})
    finally:
        del contracts.METRICS["99_test"]


def test_contracts_doc_is_current():
    """docs/CONTRACTS.md is generated from the schemas: regenerate with python -m ipt_utils.contracts."""
    assert contracts.DOC.read_text() == contracts.render()

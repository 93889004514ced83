"""The names of the CME products nqflow watches: NQ option product codes and their Databento
parent symbols. Names only, no contract terms (those are in `nqflow.market.contracts`), so the
config can validate its universe without importing the market layer.
"""

from __future__ import annotations

#: Monday..Thursday weekly product letters (CME Globex codes Q1A..Q5D: week of the month, then day).
WEEKDAY_LETTERS = {0: "A", 1: "B", 2: "C", 3: "D"}

#: The 26 CME option products on E-mini Nasdaq-100 futures (CME Globex codes): ``NQ`` quarterly
#: and serial months (American), ``QNE`` end of month, ``QN1``-``QN4`` Friday weeklies and
#: ``Q1A``-``Q5D`` Monday-to-Thursday weeklies (European). A weekly lives under its own code.
NQ_OPTION_PRODUCTS: tuple[str, ...] = (
    "NQ",
    "QNE",
    "QN1",
    "QN2",
    "QN3",
    "QN4",
    *(f"Q{week}{letter}" for letter in WEEKDAY_LETTERS.values() for week in range(1, 6)),
)
#: Micro E-mini Nasdaq-100 options ($2 a point): watched only when listed in
#: ``universe.micro_option_parents``.
MICRO_NQ_OPTION_PRODUCTS: tuple[str, ...] = ("MNQ", "MQE", "MQ1", "MQ2", "MQ3", "MQ4")

#: Databento parent symbols (stype_in="parent") of every NQ option product.
NQ_OPTION_PARENTS = tuple(f"{code}.OPT" for code in NQ_OPTION_PRODUCTS)
NQ_FUTURE_PARENT = "NQ.FUT"


def product_of_parent(parent: str) -> str:
    """'Q2D.OPT' -> 'Q2D' (the definition's ``asset``)."""
    return parent.removesuffix(".OPT")

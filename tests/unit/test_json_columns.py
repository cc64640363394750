"""Undefined metrics (NaN, infinity) are stored as null in every JSON column: JSON has no NaN,
Postgres refuses the token, and a strict client cannot parse a response that carries it."""

from __future__ import annotations

import json

from sqlalchemy import JSON, Column, Integer, MetaData, Table, insert, select

from service.shared.store.session import dumps_json, get_engine


def test_non_finite_numbers_become_null_at_any_depth():
    value = {"a": float("nan"), "b": [1.5, float("inf")], "c": {"d": float("-inf"), "e": "x"}, "f": 2}
    assert json.loads(dumps_json(value)) == {"a": None, "b": [1.5, None], "c": {"d": None, "e": "x"}, "f": 2}


def test_the_engine_writes_json_columns_through_it(tmp_path):
    engine = get_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("data", JSON))
    table.create(engine)
    with engine.begin() as conn:
        conn.execute(insert(table).values(id=1, data={"sign_agreement": float("nan"), "loss": 0.5}))
        assert conn.execute(select(table.c.data)).scalar_one() == {"sign_agreement": None, "loss": 0.5}

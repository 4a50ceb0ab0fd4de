"""The due index holds a whole hour of new secrets in one bucket document.

Regression: a first push of 1,000 secrets with rotation policies puts every entry in the same
hour's bucket, and OpenBao refuses a JSON body with that many strings ("high complexity").
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from chamberlain.adapters.authority import Authority
from chamberlain.adapters.due_index import DueIndex, decode_bucket, encode_bucket
from tests.harness.openbao import BaoScope


def test_encoding_round_trips_and_is_deterministic() -> None:
    items = {"platform-data/b/x": "2026-01-01T00:10:00Z", "destroy:platform-data/a/y": "z"}
    encoded = encode_bucket(items)
    assert list(encoded) == ["entries"] and decode_bucket(encoded) == items
    assert encode_bucket(dict(reversed(list(items.items())))) == encoded
    assert decode_bucket(None) == {} and decode_bucket({}) == {}


def test_one_bucket_takes_1500_entries_and_finds_them_due(bao: BaoScope) -> None:
    authority = Authority.connect(bao.addr, bao.token, namespace=bao.namespace)
    authority.enable_secrets_engine("kv", "chamberlain", {"version": "2"})
    now = datetime(2026, 6, 1, 12, 5, tzinfo=timezone.utc)
    due = now + timedelta(minutes=20)
    entries = {f"platform-data/bulk/s-{i:04d}": due for i in range(1500)}
    index = DueIndex(authority, environment="bench")

    assert index.add(entries, now=now) >= 1

    scan = index.scan(due + timedelta(minutes=1))
    found = {e.key for e in scan.due()}
    assert found == set(entries)

"""The pure lease logic: engine names, the KV metadata record, renewal point, renew vs re-issue."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from chamberlain.planner.leases import (
    LEASE_KEYS,
    LeaseNameError,
    LeaseRecord,
    connection_name,
    credential_of_lease,
    data_keys,
    decide,
    decode,
    default_overlap,
    encode_record,
    engine_role,
    format_time,
    is_due,
    new_record,
    parse_engine_role,
    parse_time,
    renewal_point,
    retiring_due,
)

T0 = datetime(2026, 11, 28, 16, 0, tzinfo=timezone.utc)
PATH = "platform-data/postgres/reporting"


def _record(**overrides: object) -> LeaseRecord:
    values: dict[str, object] = {
        "role": "reader",
        "lease_id": "database/creds/platform-data.postgres.reporting.reader/abc.XyZ",
        "expires": T0 + timedelta(hours=1),
        "ttl": 3600,
        "max_ttl": 86400,
        "max_expires": T0 + timedelta(days=1),
        "renewable": True,
        "issued": T0,
    }
    values.update(overrides)
    return LeaseRecord(**values)  # type: ignore[arg-type]


# ---- names --------------------------------------------------------------------------------------


def test_engine_names_derive_from_the_path_and_back() -> None:
    assert connection_name(PATH) == "platform-data.postgres.reporting"
    assert engine_role(PATH, "reader") == "platform-data.postgres.reporting.reader"
    assert parse_engine_role(engine_role(PATH, "reader")) == (PATH, "reader")
    lease = "database/creds/platform-data.postgres.reporting.reader/q2xZsu.qlJwkA"
    assert credential_of_lease(lease) == (PATH, "reader")


@pytest.mark.parametrize(
    "lease",
    [
        "database/creds/reader/",
        "aws/creds/platform-data.postgres.reporting.reader/abc",
        "database/creds/noroleseparator",
        "database/creds/plain/abc",  # a role chamberlain did not name
    ],
)
def test_leases_chamberlain_did_not_make_are_refused(lease: str) -> None:
    with pytest.raises(LeaseNameError):
        credential_of_lease(lease)


def test_two_paths_never_share_an_engine_role() -> None:
    assert engine_role("platform-data/a-b/c", "d") != engine_role("platform-data/a/b-c", "d")
    assert engine_role("platform-data/a/b", "c-d") != engine_role("platform-data/a/b-c", "d")


# ---- the record ---------------------------------------------------------------------------------


def test_a_record_survives_the_metadata_round_trip() -> None:
    record = _record(
        old_lease_id="database/creds/platform-data.postgres.reporting.reader/old.XyZ",
        revoke_after=T0 + timedelta(minutes=20),
        propagated=3,
        renewed_for="2026-11-28T17:00:00.000000Z",
    )
    patch = encode_record(record, ["reader"], renewal_at=0.5)
    metadata = {k: v for k, v in patch.items() if v is not None}

    leases = decode(metadata)

    assert leases.roles == ("reader",) and leases.renewal_at == 0.5
    assert leases.records == {"reader": record}
    assert leases.current(record.lease_id) == record
    assert leases.retiring(str(record.old_lease_id)) == record
    assert leases.current("database/creds/other/x") is None


def test_the_brief_keys_are_plain_for_a_single_role() -> None:
    patch = encode_record(_record(), ["reader"], renewal_at=0.66)
    for key in ("lease-id", "lease-expires", "lease-ttl", "lease-renewable", "role"):
        assert key in patch
    assert "lease-max-expires" in patch and patch["role"] == "reader"
    assert patch["old-lease-id"] is None, "no retiring lease: the key is removed"
    assert set(patch) <= LEASE_KEYS


def test_several_roles_get_suffixed_keys_and_data_keys() -> None:
    roles = ["reader", "writer"]
    reader = encode_record(_record(), roles, renewal_at=0.66)
    writer = encode_record(
        _record(role="writer", lease_id="database/creds/w/1"), roles, renewal_at=0.66
    )
    metadata = {k: v for k, v in {**reader, **writer}.items() if v is not None}

    leases = decode(metadata)

    assert metadata["role"] == "reader,writer"
    assert "lease-id.reader" in metadata and "lease-id.writer" in metadata
    assert set(leases.records) == {"reader", "writer"}
    assert data_keys("writer", roles) == ("writer.username", "writer.password")
    assert data_keys("reader", ["reader"]) == ("username", "password")


def test_incomplete_or_garbled_records_are_skipped() -> None:
    assert decode({}).records == {}
    assert decode({"role": "reader", "lease-id": "x"}).records == {}
    metadata = {k: v for k, v in encode_record(_record(), ["reader"], renewal_at=2.0).items() if v}
    metadata["lease-ttl"] = "soon"
    leases = decode(metadata)
    assert leases.records == {} and leases.renewal_at == 0.66


def test_times_are_rfc3339_utc() -> None:
    text = format_time(T0 + timedelta(microseconds=5))
    assert text == "2026-11-28T16:00:00.000005Z"
    assert parse_time(text) == T0 + timedelta(microseconds=5)
    assert parse_time("2026-11-28T17:00:00+01:00") == T0
    assert parse_time("yesterday") is None and parse_time(None) is None


# ---- decisions ----------------------------------------------------------------------------------


def test_the_renewal_point_is_a_fraction_of_the_current_period() -> None:
    start, end = T0, T0 + timedelta(minutes=60)
    assert renewal_point(start, end, 0.66) == T0 + timedelta(minutes=39.6)
    assert not is_due(start, end, 0.66, T0 + timedelta(minutes=39))
    assert is_due(start, end, 0.66, T0 + timedelta(minutes=40))
    assert is_due(start, end, 0.25, T0 + timedelta(minutes=15))


def test_renew_while_a_full_increment_fits_under_the_maximum() -> None:
    max_expires = T0 + timedelta(hours=2)
    assert decide(renewable=True, now=T0, ttl=3600, max_expires=max_expires) == "renew"
    at_limit = max_expires - timedelta(hours=1)
    assert decide(renewable=True, now=at_limit, ttl=3600, max_expires=max_expires) == "renew"
    later = at_limit + timedelta(seconds=1)
    assert decide(renewable=True, now=later, ttl=3600, max_expires=max_expires) == "reissue"
    assert decide(renewable=False, now=T0, ttl=3600, max_expires=max_expires) == "reissue"
    assert decide(renewable=True, now=T0, ttl=0, max_expires=max_expires) == "reissue"


def test_a_reissued_record_retires_the_previous_lease_after_the_overlap() -> None:
    previous = _record()
    now = T0 + timedelta(hours=23)

    fresh = new_record(
        role="reader",
        lease_id="database/creds/platform-data.postgres.reporting.reader/new.XyZ",
        lease_duration=3600,
        renewable=True,
        ttl=3600,
        max_ttl=86400,
        now=now,
        previous=previous,
        overlap=timedelta(minutes=20),
    )

    assert fresh.old_lease_id == previous.lease_id
    assert fresh.revoke_after == now + timedelta(minutes=20)
    assert (fresh.expires, fresh.max_expires) == (now + timedelta(hours=1), now + timedelta(days=1))
    assert not retiring_due(fresh, now + timedelta(minutes=19))
    assert retiring_due(fresh, now + timedelta(minutes=20))
    assert not retiring_due(_record(), now), "nothing retiring, nothing to revoke"


def test_a_first_issue_retires_nothing_and_the_default_overlap_is_the_rest_of_a_period() -> None:
    fresh = new_record(
        role="reader",
        lease_id="x/y",
        lease_duration=60,
        renewable=True,
        ttl=60,
        max_ttl=120,
        now=T0,
    )
    assert fresh.old_lease_id is None and fresh.revoke_after is None
    assert default_overlap(3600, 0.66) == timedelta(seconds=1224)
    assert default_overlap(1, 0.99) == timedelta(seconds=1)

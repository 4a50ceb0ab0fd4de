"""The Prometheus exposition: what a scraper parses must be well-formed and add up."""

from __future__ import annotations

import re
import threading

from chamberlain.runtime.metrics import DURATION_BUCKETS, MAX_TYPES_PER_FUNCTION, Metrics

SAMPLE = re.compile(r"^[a-z_]+(\{[^}]*\})? [0-9.e+-]+$|^[a-z_]+(\{[^}]*\})? \+Inf$")


def samples(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


def test_render_is_text_format_0_0_4() -> None:
    m = Metrics()
    m.record(
        function="rotate-secrets", type_="dev.knative.sources.ping", outcome="ok", duration_s=0.02
    )
    text = m.render()

    assert text.endswith("\n")
    assert "# TYPE chamberlain_events_total counter" in text
    assert "# TYPE chamberlain_step_duration_seconds histogram" in text
    assert "# TYPE chamberlain_up gauge" in text
    for line in text.splitlines():
        assert line.startswith("# ") or SAMPLE.match(line), line
    got = samples(text)
    key = (
        'chamberlain_events_total{function="rotate-secrets",'
        'type="dev.knative.sources.ping",outcome="ok"}'
    )
    assert got[key] == 1
    assert got["chamberlain_up"] == 1


def test_histogram_buckets_are_cumulative() -> None:
    m = Metrics()
    for duration in (0.001, 0.03, 0.03, 7.0, 120.0):
        m.record(function="f", type_="t", outcome="ok", duration_s=duration)
    got = samples(m.render())

    def bucket(le: str) -> float:
        return got[f'chamberlain_step_duration_seconds_bucket{{function="f",le="{le}"}}']

    assert bucket("0.005") == 1
    assert bucket("0.05") == 3
    assert bucket("10") == 4
    assert bucket("60") == 4
    assert bucket("+Inf") == 5
    assert got['chamberlain_step_duration_seconds_count{function="f"}'] == 5
    assert abs(got['chamberlain_step_duration_seconds_sum{function="f"}'] - 127.061) < 1e-6
    assert len([k for k in got if "_bucket" in k]) == len(DURATION_BUCKETS) + 1


def test_label_values_are_escaped() -> None:
    m = Metrics()
    m.record(function="f", type_='a"b\\c\nd', outcome="ok", duration_s=0)
    assert 'type="a\\"b\\\\c\\nd"' in m.render()


def test_made_up_types_cannot_grow_the_series_without_bound() -> None:
    m = Metrics()
    for i in range(MAX_TYPES_PER_FUNCTION + 50):
        m.record(function="f", type_=f"type-{i}", outcome="permanent", duration_s=0)
    assert m.events_total(function="f", type_="other", outcome="permanent") == 50
    assert m.render().count("chamberlain_events_total{") == MAX_TYPES_PER_FUNCTION + 1


def test_up_gauge_follows_set_up() -> None:
    m = Metrics()
    m.set_up(False)
    assert samples(m.render())["chamberlain_up"] == 0


def test_concurrent_records_are_all_counted() -> None:
    m = Metrics()

    def work() -> None:
        for _ in range(500):
            m.record(function="f", type_="t", outcome="ok", duration_s=0.001)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert m.events_total(function="f", type_="t", outcome="ok") == 4000
    assert samples(m.render())['chamberlain_step_duration_seconds_count{function="f"}'] == 4000

"""The run-summary schema: one list of fields drives training, samples and the report."""

from __future__ import annotations

from audiolstm.analysis.report import COLUMNS, CSV_FIELDS
from audiolstm.runinfo import METRIC_FIELDS, SAMPLE_FIELDS, SUMMARY_FIELDS


def test_keys_are_unique_and_each_field_has_one_source() -> None:
    keys = [f.key for f in SUMMARY_FIELDS]
    assert len(keys) == len(set(keys))
    assert not any(f.metric and f.sample for f in SUMMARY_FIELDS)
    assert set(METRIC_FIELDS.values()) | set(SAMPLE_FIELDS) <= set(keys)


def test_report_columns_and_csv_follow_the_schema() -> None:
    headed = [(f.header, f.key) for f in SUMMARY_FIELDS if f.header]
    assert [c for c in COLUMNS if c[1] in {f.key for f in SUMMARY_FIELDS}] == headed
    assert set(CSV_FIELDS) >= {f.key for f in SUMMARY_FIELDS}

"""[analysis]: the metrics a canary is judged by, checked against the schema once at load.

What a metric cannot give is refused here, before any host is touched: a latency from a log
format without request times, a prometheus metric without a query, a bound-less metric."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from deployer.config import schema
from deployer.config.reader import Reader
from deployer.config.schema import ANALYSIS, METRIC, default

# what each access-log format can measure (docs/canary-analysis.md: the log format)
FORMAT_MEASURES = {
    "deployer": ("success_rate", "p50_ms", "p99_ms", "requests"),
    "combined": ("success_rate", "requests"),
}
# the keys that only mean something for one provider
PROVIDER_KEYS = {
    "access_log": ("path", "log_format", "measure"),
    "prometheus": ("url", "query"),
    "http": ("url", "json_path"),
    "command": ("command", "local"),
}
NEEDED = {"prometheus": ("url", "query"), "http": ("url", "json_path"), "command": ("command",)}
BOUNDS = ("min", "max", "max_vs_baseline", "max_ratio_vs_baseline")
PLACEHOLDERS = ("host", "stage", "release")


@dataclass(frozen=True)
class Metric:
    name: str
    provider: str = default(METRIC, "provider")
    path: str = default(METRIC, "path")
    log_format: str = default(METRIC, "log_format")
    measure: str = default(METRIC, "measure")
    min: float | None = None
    max: float | None = None
    max_vs_baseline: float | None = None
    max_ratio_vs_baseline: float | None = None
    url: str = default(METRIC, "url")
    query: str = default(METRIC, "query")
    json_path: str = default(METRIC, "json_path")
    command: str = default(METRIC, "command")
    local: bool = default(METRIC, "local")

    @property
    def higher_is_better(self) -> bool:
        """Which way is worse, for the baseline comparisons: a success rate or a request count
        is better higher, a latency lower; another provider's number is better lower unless the
        metric only bounds it from below (`min` without `max`)."""
        if self.provider == "access_log":
            return self.measure in ("success_rate", "requests")
        return self.min is not None and self.max is None

    @property
    def unit(self) -> str:
        if self.provider != "access_log":
            return ""
        return {"success_rate": " %", "p50_ms": " ms", "p99_ms": " ms"}.get(self.measure, "")


@dataclass(frozen=True)
class AnalysisSettings:
    metrics: tuple[Metric, ...]
    interval: int = default(ANALYSIS, "interval")
    checks: int = default(ANALYSIS, "checks")
    failure_limit: int = default(ANALYSIS, "failure_limit")
    min_requests: int = default(ANALYSIS, "min_requests")
    inconclusive: str = default(ANALYSIS, "inconclusive")


def read(reader: Reader, data: object) -> AnalysisSettings:
    given = dict(reader.table(data, "analysis", schema.ANALYSIS))
    entries = given.pop("metrics")
    if not entries:
        raise reader.fail("analysis.metrics", "expected at least one [[analysis.metrics]] table")
    metrics = [metric(reader, entry, f"analysis.metrics[{i}]") for i, entry in enumerate(entries)]
    seen: set[str] = set()
    for i, m in enumerate(metrics):
        if m.name in seen:
            raise reader.fail(f"analysis.metrics[{i}].name", f"{m.name!r} names two metrics")
        seen.add(m.name)
    return AnalysisSettings(metrics=tuple(metrics), **given)


def metric(reader: Reader, data: object, where: str) -> Metric:
    given = reader.table(data, where, schema.METRIC)
    provider = given.get("provider", default(METRIC, "provider"))
    name = given["name"].strip()
    if not name or any(not c.isprintable() for c in name):
        raise reader.fail(f"{where}.name", f"expected a short printable name, got {given['name']!r}")
    for key in given:
        owners = [p for p, keys in PROVIDER_KEYS.items() if key in keys]
        if owners and provider not in owners:
            raise reader.fail(
                f"{where}.{key}", f"applies to provider {' or '.join(owners)} only (this metric's is {provider})"
            )
    for key in NEEDED.get(provider, ()):
        if not str(given.get(key, "")).strip():
            raise reader.fail(
                f"{where}.{key}", f"missing: provider {provider!r} needs {' and '.join(NEEDED[provider])}"
            )
    if "url" in given and not given["url"].startswith(("http://", "https://")):
        raise reader.fail(f"{where}.url", f"expected an http(s) URL, got {given['url']!r}")
    if provider == "access_log":
        path = given.get("path", default(METRIC, "path"))
        if not path.startswith("/") or any(c in path for c in "\n\0"):
            raise reader.fail(f"{where}.path", f"expected an absolute path, got {path!r}")
        fmt = given.get("log_format", default(METRIC, "log_format"))
        measure = given.get("measure", default(METRIC, "measure"))
        if measure not in FORMAT_MEASURES[fmt]:
            raise reader.fail(
                f"{where}.measure",
                f"{measure} needs $request_time in the log; log_format {fmt!r} has none "
                '(use log_format "deployer": docs/canary-analysis.md)',
            )
    if given.get("json_path") and any(not part for part in given["json_path"].split(".")):
        raise reader.fail(f"{where}.json_path", f"expected a dotted path like data.value, got {given['json_path']!r}")
    for key in BOUNDS:
        if key in given and not math.isfinite(given[key]):
            raise reader.fail(f"{where}.{key}", f"expected a finite number, got {given[key]!r}")
    if not any(key in given for key in BOUNDS):
        raise reader.fail(where, f"metric {name!r} has no bound (set one of: {', '.join(BOUNDS)})")
    if "min" in given and "max" in given and given["min"] > given["max"]:
        raise reader.fail(f"{where}.min", f"min {given['min']} is above max {given['max']}")
    values: dict[str, Any] = {k: float(v) if k in BOUNDS else v for k, v in given.items() if k != "name"}
    return Metric(name=name, **values)

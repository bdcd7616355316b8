"""The promotion rule of an A/B test: promote the challenger only if every check holds.

* lift: the CTR lift's lower confidence bound is above ``ab.min_lift``;
* srm: the users per arm match the configured share (chi-square p >= ``ab.srm_alpha``);
  a mismatch means the assignment or the logging is broken and no number can be trusted;
* latency: the challenger's p99 server latency <= ``ab.max_p99_ms``;
* errors: the challenger's share of requests answered with status >= 500 <= ``ab.max_error_rate``.

The guardrails need the request records; without them the test cannot promote.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List

from feedrank.ab import CHALLENGER_ARM


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclasses.dataclass(frozen=True)
class Decision:
    checks: List[Check]

    @property
    def promote(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def reasons(self) -> List[str]:
        """What blocks the promotion, one sentence per failing check."""
        return [c.detail for c in self.checks if not c.ok]

    def to_dict(self) -> Dict[str, Any]:
        return {"promote": self.promote, "reasons": self.reasons,
                "checks": [dataclasses.asdict(c) for c in self.checks]}


def _pct(x: float) -> str:
    return f"{100.0 * x:+.2f}%"


def decide(report: Dict[str, Any], ab) -> Decision:
    """The checks of `report` (feedrank.ab.report.build) against the `ab` config section."""
    checks: List[Check] = []
    ctr = report["lift"]["ctr"]
    level = int(round(100 * ctr["level"]))
    if ctr["lo"] is None:
        checks.append(Check("lift", False, "the CTR lift has no confidence interval (too few users or clicks)"))
    else:
        span = f"CTR lift {_pct(ctr['estimate'])} [{level}% CI {_pct(ctr['lo'])}, {_pct(ctr['hi'])}]"
        ok = ctr["lo"] > ab.min_lift
        rel = "is above" if ok else "is not above"
        checks.append(Check("lift", ok, f"{span}: the lower bound {_pct(ctr['lo'])} {rel} ab.min_lift "
                                        f"{_pct(ab.min_lift)}"))
    s = report["srm"]
    ok = s["p_value"] >= ab.srm_alpha
    checks.append(Check("srm", ok, (
        f"sample-ratio {'ok' if ok else 'mismatch'}: {s['champion']} champion vs {s['challenger']} challenger "
        f"users (challenger share {s['observed_share']:.4f}, configured {s['share']:.4f}), chi-square p = "
        f"{s['p_value']:.3g} {'>=' if ok else '<'} ab.srm_alpha {ab.srm_alpha:g}")))
    g = report["guardrails"].get(CHALLENGER_ARM)
    if not g or g.get("requests", 0) == 0:
        why = "no request records for the challenger arm: its latency and error rate cannot be checked"
        checks += [Check("latency", False, why), Check("errors", False, why)]
        return Decision(checks)
    p99 = g["p99_latency_ms"]
    ok = p99 is not None and p99 <= ab.max_p99_ms
    checks.append(Check("latency", ok, f"challenger p99 latency {p99 if p99 is None else round(p99, 1)} ms "
                                       f"{'<=' if ok else '>'} ab.max_p99_ms {ab.max_p99_ms:g} ms"))
    rate = g["error_rate"]
    ok = rate <= ab.max_error_rate
    checks.append(Check("errors", ok, f"challenger error rate {rate:.4f} ({g['errors']} of {g['requests']} "
                                      f"requests with status >= 500) {'<=' if ok else '>'} ab.max_error_rate "
                                      f"{ab.max_error_rate:g}"))
    return Decision(checks)

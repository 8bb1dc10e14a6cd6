"""What a paid generation run did (`RunReport`), and the limits it stops at (`Budget`)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from fakescope.generate.openai_images import OpenAIImagesConfig


@dataclass
class RunReport:
    """What one run did. `stopped` is None, `budget` or `interrupted`."""

    done: int = 0
    skipped: int = 0
    recovered: int = 0
    failed: int = 0
    unresolved: int = 0
    missing: int = 0
    """Jobs the ledger records as done whose output `out` no longer holds: deleted, damaged (empty or cut short), or in
    another folder (a ledger copied into `out` without its images). They are made again, paid again."""
    spent: float = 0.0
    """Estimated spend of this run: its images billed, and its lost answers (`maybe`)."""
    maybe: float = 0.0
    """Of `spent`, the requests whose answer timed out or broke off (lost answers): they may have been billed."""
    spent_before: float = 0.0
    """Estimated spend of earlier runs: what the ledger holds (jobs recovered from the spool included, at the price
    their request was sent at where the ledger has it), plus `elsewhere` and `unpriced` images at this run's price."""
    maybe_before: float = 0.0
    """Of `spent_before`, the attempts whose answer never came (a crash or kill in flight, a lost answer; resent or
    not): they may have been billed, each at the price it was sent at (this run's where the ledger has none)."""
    elsewhere: int = 0
    """Images `out` held at the start, of any model and parameters (known by their names), that this ledger did not
    pay for: another machine's (or a lost ledger's) runs. Counted in `spent_before` at this run's price (their own is
    not known here); a job that finds its image among them is done, unpaid, and the ledger records it at that price."""
    unpriced: int = 0
    """Jobs the ledger records as done at no cost and without a price (made without a budget at a price fakescope did
    not know, or by an older version): counted in `spent_before` at this run's price. Those made at an explicit price of
    0 (`price_per_image=0`) are free, not counted here."""
    stopped: str | None = None
    manifest: str | None = None
    ledger: str | None = None
    tokens: int | None = None
    """Total tokens the API reported for this run's done and recovered images (GPT image models; each image's `usage` is
    in its params); None where none reported usage (dall-e models never do)."""


@dataclass(frozen=True)
class Budget:
    """A run's limits, and the price each image it pays for is counted at."""

    price: float
    priced: bool
    """Whether `price` is known (given or in the table), 0 included; else it is 0 for want of one."""
    max_images: int | None
    max_spend: float | None
    max_total_spend: float | None

    @classmethod
    def of(cls, config: OpenAIImagesConfig, max_images: int | None, max_spend: float | None,
           max_total_spend: float | None) -> Budget:
        """A capped spend needs `config.price()` (ConfigError without one); uncapped, an unknown price counts as 0."""
        capped = max_spend is not None or max_total_spend is not None
        known = config.price() if capped else config.known_price()
        return cls(known or 0.0, known is not None, max_images, max_spend, max_total_spend)

    def exceeded(self, report: RunReport, in_flight: int) -> bool:
        """Whether one more request, beside the `in_flight` ones, would pass a limit."""
        if self.max_images is not None and report.done + in_flight + 1 > self.max_images:
            return True
        spend = report.spent + (in_flight + 1) * self.price
        if self.max_spend is not None and spend > self.max_spend + 1e-9:
            return True
        return self.max_total_spend is not None and report.spent_before + spend > self.max_total_spend + 1e-9


def count_tokens(report: RunReport, row: dict) -> None:
    usage = json.loads(row["params"]).get("usage") or {}
    if "total_tokens" in usage:
        report.tokens = (report.tokens or 0) + usage["total_tokens"]

"""Mean and spread over seeds, the sampling error of a test set, and the rule for a ranking.

"A beats B" is stated on the page only when the difference of the two rows' seed means exceeds
both the seed spread (the larger of the two rows' standard deviations over seeds, so each row
needs at least two seeds) and twice the standard error of the test sampling (what evaluating
on a finite test set adds). Anything less is reported as no ranking, with the reason.
"""

from __future__ import annotations

import math


def _finite(values) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def mean_sd(values) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None with fewer than two values)."""
    values = _finite(values)
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def accuracy_se(accuracy: float, n: int) -> float:
    """Standard error of an accuracy measured on ``n`` test images."""
    return math.sqrt(accuracy * (1 - accuracy) / n)


def mae_se(mae: float, rmse: float, n: int) -> float:
    """Standard error of a mean absolute error from its RMSE (|e| has variance rmse² - mae²)."""
    return math.sqrt(max(rmse ** 2 - mae ** 2, 0.0) / n)


def row_se(row) -> float | None:
    """The test-sampling standard error of a row's seed mean, as for one evaluation of it (the seeds
    share the test images, so averaging them does not shrink it)."""
    records = row.records()
    n = min((r.get("n") or r["metrics"].get("n") or 0 for r in records), default=0)
    if not n:
        return None
    if row.task == "classify":
        mean, _ = mean_sd(row.values("accuracy"))
        return None if mean is None else accuracy_se(mean, n)
    mae, _ = mean_sd(row.values("mae"))
    rmse, _ = mean_sd(row.values("rmse"))
    return None if mae is None or rmse is None else mae_se(mae, rmse, n)


def rank(difference: float, se: float, spread: float | None) -> str:
    """The verdict on ``difference`` (positive: the first row is better): the "A beats B" rule."""
    if spread is None:
        return "no ranking: needs 2 seeds a side"
    bar = max(spread, 2 * se)
    if difference > bar:
        return "better"
    if difference < -bar:
        return "worse"
    return "no ranking: within the seed spread" if spread >= 2 * se else "no ranking: within 2 SE"


def compare(a, b) -> dict | None:
    """Row ``a`` against row ``b`` (one task and dataset): the difference of their seed means
    (positive: ``a`` better), the test-sampling standard error of that difference, the seed spread
    and the verdict. None when either row has no figure."""
    metric = a.metric
    mean_a, sd_a = mean_sd(a.values(metric))
    mean_b, sd_b = mean_sd(b.values(metric))
    se_a, se_b = row_se(a), row_se(b)
    if None in (mean_a, mean_b, se_a, se_b):
        return None
    difference = mean_a - mean_b if a.task == "classify" else mean_b - mean_a  # lower MAE is better
    se = math.sqrt(se_a ** 2 + se_b ** 2)
    spread = None if sd_a is None or sd_b is None else max(sd_a, sd_b)
    return {"difference": difference, "se": se, "spread": spread, "verdict": rank(difference, se, spread)}

"""Synthetic, OpenRTB-like bid requests with a learnable bid / no-bid label.

No public ad-tech data set can be fetched here, so the sample models are
trained on data made from a seed. The data is built to look like the traffic
a bid filter sees, so that the models are not trivial:

* category frequencies are Zipf-like (a few domains, publishers and
  advertisers take most of the traffic);
* traffic and response rates follow the hour of day, and differ on weekends;
* values are missing the way they are in bid requests (unknown users have no
  history, geo and viewability are often absent);
* the label depends on interactions (hour x device, advertiser x domain,
  floor price x predicted value), not on any single feature.

Everything is a pure function of ``(n_rows, seed)``: the same arguments give
the same arrays, bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """Feature matrix (float32, NaN = missing), 0/1 labels and column names."""

    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]

    @property
    def missing_rate(self) -> float:
        return float(np.isnan(self.X).mean())

    @property
    def positive_rate(self) -> float:
        return float(self.y.mean())


# --- building blocks --------------------------------------------------------

def zipf_choice(rng: np.random.Generator, n_categories: int, size: int,
                exponent: float = 1.1) -> np.ndarray:
    """Category indices 0..n-1 with P(k) proportional to 1/(k+1)**exponent."""
    weights = 1.0 / np.arange(1, n_categories + 1) ** exponent
    return rng.choice(n_categories, size=size, p=weights / weights.sum())


def diurnal_hours(rng: np.random.Generator, size: int) -> np.ndarray:
    """Hours of day 0..23, with the evening peak and night trough of web traffic."""
    hours = np.arange(24)
    weights = 1.0 + 0.75 * np.sin(2 * np.pi * (hours - 14) / 24)
    return rng.choice(24, size=size, p=weights / weights.sum())


def hour_response(hours: np.ndarray, peak: float) -> np.ndarray:
    """A smooth daily cycle in [-1, 1] with its maximum at hour ``peak``."""
    return np.cos(2 * np.pi * (hours - peak) / 24)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def draw_labels(rng: np.random.Generator, logit: np.ndarray) -> np.ndarray:
    return (rng.random(logit.shape[0]) < sigmoid(logit)).astype(np.int8)


def with_missing(rng: np.random.Generator, column: np.ndarray, rate: float) -> np.ndarray:
    column = column.astype(np.float32)
    column[rng.random(column.shape[0]) < rate] = np.nan
    return column


# --- rtb-small --------------------------------------------------------------

RTB_SMALL_FEATURES = (
    "day_of_week", "hour", "advertiser_index", "domain_index",
    "region_index", "city_index", "device_type",
)


def make_rtb_small(n_rows: int, seed: int) -> Dataset:
    """The 7 integer-coded features of the AWS bid-filter guidance.

    Columns: day of week, hour, advertiser index, domain index, region index,
    city index, device type (0-5). No missing values, as in that guidance.
    """
    rng = np.random.default_rng(seed)
    n_adv, n_domain, n_region, cities_per_region = 40, 400, 30, 12

    # The world: fixed effects drawn once from the seed.
    adv_quality = rng.normal(0, 0.6, n_adv)
    domain_quality = rng.normal(0, 0.5, n_domain)
    # Advertiser x domain-cluster affinity: the interaction a tree must learn.
    affinity = rng.normal(0, 1.2, (n_adv, 8))
    region_effect = rng.normal(0, 0.4, n_region)
    device_peak = np.array([20.0, 13.0, 21.0, 9.0, 22.0, 18.0])  # hour each device converts best
    device_effect = np.array([0.2, -0.3, 0.4, -0.6, 0.1, -0.1])

    dow = rng.integers(0, 7, n_rows)
    hour = diurnal_hours(rng, n_rows)
    adv = zipf_choice(rng, n_adv, n_rows, 1.0)
    domain = zipf_choice(rng, n_domain, n_rows, 1.15)
    region = zipf_choice(rng, n_region, n_rows, 0.9)
    city = region * cities_per_region + zipf_choice(rng, cities_per_region, n_rows, 1.3)
    device = rng.choice(6, size=n_rows, p=[0.38, 0.30, 0.17, 0.08, 0.05, 0.02])

    weekend = dow >= 5
    logit = (
        -1.9
        + adv_quality[adv] + domain_quality[domain]
        + affinity[adv, domain % 8]
        + region_effect[region]
        + 0.35 * ((city % cities_per_region) < 2)           # big cities of a region
        + device_effect[device]
        + 0.9 * hour_response(hour, device_peak[device])     # hour x device
        + np.where(weekend, 0.5, -0.1) * (device == 1)       # weekends on desktop... less so on mobile
    )
    X = np.column_stack([dow, hour, adv, domain, region, city, device]).astype(np.float32)
    return Dataset(X=X, y=draw_labels(rng, logit), feature_names=RTB_SMALL_FEATURES)


# --- rtb-large --------------------------------------------------------------

# (name, number of categories, Zipf exponent or None for uniform)
_LARGE_CATEGORICALS = (
    ("exchange_id", 12, 1.2), ("publisher_id", 2000, 1.1), ("domain_id", 5000, 1.05),
    ("is_app", 2, None), ("app_category", 26, 0.9), ("ad_slot_size", 16, 1.0),
    ("ad_position", 8, 1.0), ("is_video", 2, None), ("device_type", 6, 1.0),
    ("os", 7, 1.0), ("os_version", 20, 0.8), ("browser", 10, 1.2),
    ("device_make", 50, 1.3), ("connection_type", 7, 1.0), ("carrier", 30, 1.2),
    ("country", 100, 1.4), ("region", 300, 1.1), ("city", 3000, 1.05),
    ("language", 20, 1.5), ("advertiser_id", 200, 1.1), ("campaign_id", 1000, 1.05),
    ("creative_type", 5, None),
)
_LARGE_CONTINUOUS = (
    "bid_floor_usd", "floor_to_median_ratio", "historical_clearing_price",
    "user_age_days", "user_impressions_1h", "user_impressions_1d", "user_impressions_7d",
    "user_clicks_1d", "user_clicks_7d", "user_clicks_30d", "user_conversions_30d",
    "seconds_since_last_impression", "seconds_since_last_click", "user_ctr_7d",
    "user_segments_count", "domain_ctr_7d", "domain_viewability", "domain_fraud_score",
    "publisher_win_rate", "campaign_budget_remaining", "campaign_pacing_ratio",
    "advertiser_ctr_30d", "creative_ctr_7d", "geo_lat", "geo_lon", "page_load_ms",
    "tmax_ms", "impressions_in_request", "screen_width", "screen_height",
    "deal_present", "gdpr_applies", "consent_string_length", "ip_risk_score",
    "predicted_ctr_baseline", "timezone_offset_hours",
)
RTB_LARGE_FEATURES = (("day_of_week", "hour")
                      + tuple(name for name, _, _ in _LARGE_CATEGORICALS)
                      + _LARGE_CONTINUOUS)


def make_rtb_large(n_rows: int, seed: int) -> Dataset:
    """About 60 features of a real traffic filter, 5-10 % of values missing."""
    rng = np.random.default_rng(seed)
    n = n_rows
    col: dict[str, np.ndarray] = {
        "day_of_week": rng.integers(0, 7, n).astype(np.float32),
        "hour": diurnal_hours(rng, n).astype(np.float32),
    }
    for name, n_categories, exponent in _LARGE_CATEGORICALS:
        if exponent is None:
            col[name] = rng.integers(0, n_categories, n).astype(np.float32)
        else:
            col[name] = zipf_choice(rng, n_categories, n, exponent).astype(np.float32)

    # Fixed per-category effects of the world, drawn once.
    domain_quality = rng.normal(0, 0.6, 5000)
    adv_domain_affinity = rng.normal(0, 1.0, (200, 16))
    exchange_effect = rng.normal(0, 0.3, 12)
    device_peak = rng.uniform(0, 24, 6)
    os_browser = rng.normal(0, 0.5, (7, 10))
    slot_effect = rng.normal(0, 0.4, 16)

    # Users: 30 % unknown (no cookie / no device id), so their history is missing together.
    known_user = rng.random(n) >= 0.30
    activity = rng.lognormal(0, 1.0, n)
    engagement = rng.beta(1.2, 40, n)                                # a user's true click rate
    imps_7d = rng.poisson(20 * activity).astype(np.float32)
    clicks_7d = rng.binomial(imps_7d.astype(np.int64), engagement).astype(np.float32)
    col.update({
        "user_age_days": rng.exponential(120, n),
        "user_impressions_1h": rng.poisson(0.3 * activity),
        "user_impressions_1d": rng.poisson(3 * activity),
        "user_impressions_7d": imps_7d,
        "user_clicks_1d": rng.binomial(rng.poisson(3 * activity), engagement),
        "user_clicks_7d": clicks_7d,
        "user_clicks_30d": clicks_7d + rng.binomial(rng.poisson(60 * activity), engagement),
        "user_conversions_30d": rng.poisson(clicks_7d * 0.05),
        "seconds_since_last_impression": rng.exponential(3600 / activity),
        "seconds_since_last_click": rng.exponential(86400 / (activity * engagement * 50 + 0.01)),
        "user_ctr_7d": (clicks_7d + 0.5) / (imps_7d + 50),
        "user_segments_count": rng.poisson(8 * activity),
    })
    user_columns = [c for c in col if c.startswith("user_") or c.startswith("seconds_since")]
    for name in user_columns:
        col[name] = np.where(known_user, col[name], np.nan)

    domain = col["domain_id"].astype(np.int64)
    median_floor = 0.4 * np.exp(0.5 * domain_quality[domain])
    floor = median_floor * rng.lognormal(0, 0.5, n)
    col.update({
        "bid_floor_usd": floor,
        "floor_to_median_ratio": floor / median_floor,
        "historical_clearing_price": median_floor * rng.lognormal(0.2, 0.3, n),
        "domain_ctr_7d": sigmoid(-4.5 + domain_quality[domain] + rng.normal(0, 0.2, n)),
        "domain_viewability": sigmoid(0.5 + domain_quality[domain] + rng.normal(0, 0.5, n)),
        "domain_fraud_score": rng.beta(1, 12, n) + 0.4 * (rng.random(n) < 0.03),
        "publisher_win_rate": rng.beta(2, 8, n),
        "campaign_budget_remaining": rng.random(n),
        "campaign_pacing_ratio": rng.lognormal(0, 0.3, n),
        "advertiser_ctr_30d": sigmoid(rng.normal(-4.0, 0.5, 200))[col["advertiser_id"].astype(np.int64)],
        "creative_ctr_7d": sigmoid(rng.normal(-4.2, 0.6, n)),
        "geo_lat": rng.uniform(-60, 70, n),
        "geo_lon": rng.uniform(-180, 180, n),
        "page_load_ms": rng.lognormal(7, 0.6, n),
        "tmax_ms": rng.choice([80, 100, 120, 150, 200, 300], size=n),
        "impressions_in_request": 1 + rng.poisson(0.4, n),
        "screen_width": rng.choice([360, 390, 414, 768, 1280, 1366, 1440, 1920], size=n),
        "screen_height": rng.choice([640, 720, 800, 844, 896, 1024, 1080], size=n),
        "deal_present": (rng.random(n) < 0.15),
        "gdpr_applies": (rng.random(n) < 0.25),
        "consent_string_length": rng.integers(0, 400, n),
        "ip_risk_score": rng.beta(1, 20, n),
        "predicted_ctr_baseline": sigmoid(rng.normal(-4.0, 0.7, n)),
        "timezone_offset_hours": rng.integers(-10, 12, n),
    })
    # Missing the way bid requests miss: geo and viewability absent for a share of traffic.
    for name, rate in (("geo_lat", 0.15), ("geo_lon", 0.15), ("domain_viewability", 0.20),
                       ("page_load_ms", 0.25), ("carrier", 0.30), ("device_make", 0.10),
                       ("os_version", 0.08), ("historical_clearing_price", 0.12),
                       ("consent_string_length", 0.20)):
        col[name] = with_missing(rng, col[name], rate)

    # The label: would a bid on this request pay off? Interactions carry the signal.
    hour = col["hour"]
    device = col["device_type"].astype(np.int64)
    adv = col["advertiser_id"].astype(np.int64)
    user_ctr = np.nan_to_num(col["user_ctr_7d"], nan=0.008)
    value = 8.0 * user_ctr + 20.0 * col["domain_ctr_7d"] + 15.0 * col["creative_ctr_7d"]
    logit = (
        -2.3
        + 1.2 * np.tanh(3 * (value - col["bid_floor_usd"]))               # value x floor
        + domain_quality[domain] * 0.5
        + adv_domain_affinity[adv, domain % 16]                            # advertiser x domain
        + 0.8 * hour_response(hour, device_peak[device])                   # hour x device
        + os_browser[col["os"].astype(np.int64), col["browser"].astype(np.int64)]
        + exchange_effect[col["exchange_id"].astype(np.int64)]
        + slot_effect[col["ad_slot_size"].astype(np.int64)]
        - 3.0 * (col["domain_fraud_score"] > 0.3)                          # fraud: never bid
        - 0.6 * (~known_user)
        + 0.7 * np.nan_to_num(col["domain_viewability"], nan=0.4) * (col["is_video"] > 0)
        - 0.8 * (col["campaign_pacing_ratio"] > 1.4) * (col["campaign_budget_remaining"] < 0.2)
        + np.where(col["day_of_week"] >= 5, 0.3, 0.0) * (device == 1)
    )
    X = np.column_stack([col[name] for name in RTB_LARGE_FEATURES]).astype(np.float32)
    return Dataset(X=X, y=draw_labels(rng, logit), feature_names=RTB_LARGE_FEATURES)


def auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted as half)."""
    y_true = np.asarray(y_true).astype(bool)
    order = np.argsort(score, kind="mergesort")
    sorted_scores = np.asarray(score)[order]
    ranks = np.empty(len(score), dtype=np.float64)
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    n_pos = int(y_true.sum())
    n_neg = len(y_true) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both classes")
    return float((ranks[y_true].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))

"""The synthetic bid-request data: deterministic, realistic in shape."""
import numpy as np
import pytest

from sample_models.data import (RTB_LARGE_FEATURES, RTB_SMALL_FEATURES, auc, make_rtb_large,
                                make_rtb_small, zipf_choice)


@pytest.mark.parametrize("make", [make_rtb_small, make_rtb_large])
def test_same_seed_same_data_and_other_seed_other_data(make):
    a, b, c = make(5000, 1), make(5000, 1), make(5000, 2)
    assert np.array_equal(a.X, b.X, equal_nan=True) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.X, c.X, equal_nan=True)


def test_rtb_small_shape_ranges_and_balance():
    d = make_rtb_small(50_000, 3)
    assert d.X.shape == (50_000, 7) and d.X.dtype == np.float32
    assert d.feature_names == RTB_SMALL_FEATURES
    assert d.missing_rate == 0.0
    dow, hour, device = d.X[:, 0], d.X[:, 1], d.X[:, 6]
    assert set(np.unique(dow)) == set(range(7))
    assert set(np.unique(hour)) == set(range(24))
    assert set(np.unique(device)) <= set(range(6))
    # A bid filter sees a minority of requests worth bidding on, but not a vanishing one.
    assert 0.10 < d.positive_rate < 0.40


def test_rtb_large_missing_rate_and_balance():
    d = make_rtb_large(50_000, 3)
    assert d.X.shape == (50_000, len(RTB_LARGE_FEATURES)) and 55 <= d.X.shape[1] <= 65
    assert 0.05 <= d.missing_rate <= 0.10
    assert 0.08 < d.positive_rate < 0.35
    # Unknown users miss their whole history together.
    names = list(RTB_LARGE_FEATURES)
    history = d.X[:, [names.index("user_clicks_7d"), names.index("user_impressions_1d")]]
    assert np.array_equal(np.isnan(history[:, 0]), np.isnan(history[:, 1]))


def test_categories_are_zipf_skewed():
    rng = np.random.default_rng(0)
    counts = np.bincount(zipf_choice(rng, 1000, 200_000, 1.1), minlength=1000)
    # The top 1 % of categories take far more than 1 % of the traffic.
    assert counts[:10].sum() / counts.sum() > 0.25
    assert counts[0] > 5 * counts[50]


def test_label_follows_hour_of_day():
    d = make_rtb_small(100_000, 4)
    rate_by_hour = np.array([d.y[d.X[:, 1] == h].mean() for h in range(24)])
    assert rate_by_hour.max() - rate_by_hour.min() > 0.05


def test_auc_matches_definition():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.4])
    # Count positive/negative pairs by hand: ties count half.
    pairs = [(p, n) for p in s[y == 1] for n in s[y == 0]]
    expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert auc(y, s) == pytest.approx(expected)
    assert auc(y, -s) == pytest.approx(1 - expected)

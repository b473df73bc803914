"""Fixtures of model_core: model files written by old XGBoost versions."""
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"

"""Compile XGBoost models Neo-style with Treelite + TL2cgen, verified against XGBoost."""

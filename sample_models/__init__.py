"""Synthetic OpenRTB-like data and the sample bid-filter models built from it."""

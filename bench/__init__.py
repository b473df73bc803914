"""Benchmark and tuning: compiled vs stock XGBoost, in-process and over HTTP.

Modules: ``load`` (wrk-driven load generator and its statistics), ``payloads`` (request
bodies from sample data), ``servers`` (start servers on loopback, CPU accounting),
``trivial_server`` (the generator's ceiling), ``baselines`` (stock-container equivalent
and hello-world apps), ``capacity`` (fleet size and cost), ``kernel`` (in-process
timings), ``sweep`` (gunicorn tuning), ``report`` (table, JSON, plots), ``cli``.
"""

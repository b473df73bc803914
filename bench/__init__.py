"""Benchmark and tuning: compiled vs stock XGBoost, in-process and over HTTP.

Modules: ``load`` (wrk-driven load generator and its statistics), ``payloads`` (the sample
rows and the request bodies drawn from them), ``servers`` (start servers on loopback, CPU
accounting), ``contenders`` (the servers compared, as commands), ``gunicorn_app`` (a
baseline app under serve's gunicorn settings), ``trivial_server`` (the generator's
ceiling), ``baselines`` (stock-container equivalent and hello-world apps), ``search``
(highest rate under the SLO), ``compare`` (servers side by side), ``kernel`` (in-process
timings), ``sweep`` (gunicorn tuning), ``capacity`` (fleet size and cost), ``chain`` (the
whole run of ``bench all``), ``results`` (the report's types, to and from JSON),
``report`` (tables, JSON, plots), ``cli`` (parsing and dispatch).
"""

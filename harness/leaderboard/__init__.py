"""Leaderboards: suites of runs that reproduce the literature's comparisons, tables and claims.

* :mod:`.suite` — the YAML suite schema and its validation;
* :mod:`.execute` — training and evaluation of a suite's rows, resumable, records to ``results/``;
* :mod:`.columns` — what a table column reads from a record;
* :mod:`.claims` — aggregation over seeds and the claim verdicts (pure statistics);
* :mod:`.render` — Markdown, CSV, figures and ``index.html`` from records only.
"""

"""nqflow: institutional flow in CME E-mini Nasdaq-100 (NQ) futures options.

The layers are packages; each imports only from those above it in this list:

- ``alerts``, ``config``, ``errors``, ``paths``, ``sqlite``, ``parquet``, ``retry``: the shared vocabulary;
- ``market``: contracts, market hours, pricing, the tidy frames every source gives;
- ``sources``: replay, Databento Historical, DBN decoding;
- ``engine``: levels, baseline, strategies, features, detection, off-book, session flow, monitor;
- ``reports``: charts, the report index, templates;
- ``ops``: scheduling, runner, store, notify, suppression, health, retention, doctor;
- ``research``: backtest, lab, quality, demo, the sample market;
- ``cli``: the command line.
"""

from nqflow._deferred import defer_rfc3987_syntax

defer_rfc3987_syntax()  # before nbformat is imported by anything: a second of every process's start

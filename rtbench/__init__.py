"""rtbench: prove and guard the promises of realtime WebSocket services.

The package root holds what every part shares (SLO targets and verdicts, latency
histograms, the results format, the wire protocol); ``reference_server``,
``loadtest`` and ``monitor`` build on it, and ``rtbench.cli`` ties them together.
"""

__version__ = "0.1.0"

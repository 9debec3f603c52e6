"""The status page (`/` of `probe run`) and the per-target evidence endpoint.

history.py keeps per-target runs of verdicts (live rounds, and the evidence log at start);
render.py turns the latest round's JSON and that history into the page and the per-target
JSON; routes.py serves them; style.css is the page's fixed style.
"""

from probe.sinks.statuspage.history import ORDER, SLOTS, WINDOW, History, Run
from probe.sinks.statuspage.render import (
    CSP,
    MAX_ROWS,
    key_evidence,
    messenger_status,
    render_page,
    target_json,
    target_link,
)
from probe.sinks.statuspage.routes import STATUS_PAGE, RoundSource, StatusPage, install

__all__ = [
    "CSP", "MAX_ROWS", "ORDER", "SLOTS", "STATUS_PAGE", "WINDOW", "History", "RoundSource", "Run",
    "StatusPage", "install", "key_evidence", "messenger_status", "render_page", "target_json",
    "target_link",
]

"""Where a judged round goes: metrics, the evidence log, the CLI report, the status page."""

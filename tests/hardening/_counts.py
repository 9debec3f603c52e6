"""How many hostile inputs each test fed the probe (printed at the end of the run).

HARDENING_EXAMPLES sets hypothesis' examples per property (default 100; the figures in
docs/reliability.md use 1000).
"""

from __future__ import annotations

import os
from collections import Counter

CASES: Counter[str] = Counter()
EXAMPLES = int(os.environ.get("HARDENING_EXAMPLES", "100"))

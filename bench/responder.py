"""The repository's MTProto responder (tests.support.mtproto) on uvloop when it is installed.

The farm has one core for every target; on the default loop the pure-Python responder, not
the tool under test, set the pace of the DC workload (reach waited on it for half the round).
"""

from __future__ import annotations

import asyncio
import runpy
import sys


def main() -> None:
    try:
        import uvloop
    except ImportError:
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    sys.argv[0] = "tests.support.mtproto"
    runpy.run_module("tests.support.mtproto", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

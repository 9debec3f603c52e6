"""Real network servers for tests: DNS, MTProto, TLS and plain TCP/HTTP.

Why real servers and not mocks: the probe's job is to classify what happens on the wire
(resets, timeouts, forged answers, wrong certificates). Only a real socket produces the
exact exceptions the engine maps to failure strings, so engine unit tests, the censorship
lab, the benchmark and fuzz tests all run against these servers.

Every server can be used in-process (``async with Server(...) as srv`` or
``await srv.start()`` / ``await srv.stop()``; port 0 picks a free port) and as a standalone
process (``python -m tests.support.<module> --listen ADDR:PORT ...``) that prints one
``ready`` line when it listens and exits cleanly on SIGTERM, so the lab can start them
inside network namespaces.
"""

"""Sockets and wire formats the checks share: connects with kernel timings, obfuscated2 framing."""

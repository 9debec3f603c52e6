"""The long-running probe: the scheduler, the HTTP server and its listener, the web config."""

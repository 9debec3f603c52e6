"""One module per check (dns, tcp, tls, mtproto, http), each an async function that
returns observations and never touches metrics or verdicts."""

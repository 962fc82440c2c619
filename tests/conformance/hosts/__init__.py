"""Per-host fixtures of the conformance suite: each starts its own server
on loopback with a throwaway config and data directory."""

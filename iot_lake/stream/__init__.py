"""The streaming scorer: landing records scored against the forecast as they arrive, into the case store."""

"""USB flashing: target discovery and refusal policy, parallel writing, read-back verification."""

"""The REST API of `obreconcile serve` (SPEC.md §4): aiohttp routes, tokens, permission rules."""

"""The HTTP surface: thin aiohttp handlers that translate requests into service calls."""

"""mediagate: a self-hosted, plugin-based media gateway.

The public API for plugins is re-exported from :mod:`gateway.api_public`; everything else
is internal and may change between releases.
"""

__version__ = "0.1.0"

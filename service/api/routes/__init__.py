"""HTTP routes, one module per resource; all mounted under /v1 by service.app."""

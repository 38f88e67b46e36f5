"""The web console under ``/ui``: server-rendered pages over the API's own services."""

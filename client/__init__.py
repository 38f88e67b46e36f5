"""xpstream's small Python client for apps: events (exposures, metrics) sent in batches, and the
tracking callback that makes GrowthBook's SDK log exposures. Standard library only: an app
installs nothing of the server to use it."""

from client.events import EventsClient, growthbook_tracking

__all__ = ["EventsClient", "growthbook_tracking"]

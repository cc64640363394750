"""What the API and the workers share: settings, the store, events, artifacts, the queue, quotas,
logging. Imports nothing from service.api."""

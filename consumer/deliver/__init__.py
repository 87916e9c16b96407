"""Delivery to Klaviyo: the HTTP client, retry policy and the per-batch sender."""

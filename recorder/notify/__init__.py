"""Telling the outside about status changes: signed, ordered, retried webhooks.

`webhook.WebhookNotifier` is a lifecycle listener; `signing.verify_signature` is for receivers;
`address_guard` keeps a caller's webhook URL away from private and metadata addresses.
"""

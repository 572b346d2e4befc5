"""`recorder dashboard`: a small web page over the recordings a deployment stored.

It reads the manifests (`<prefix>/<recordingId>.json`, docs/delivery.md) from the local output
directory or an S3 prefix, lists the recordings with what the manifests say, shows a thumbnail
taken from each file with PyAV, and plays the file in the browser's own player (local files
served with Range support, S3 objects through presigned URLs). Everything in a manifest is
untrusted input (participant names come from the room) and is escaped where it is shown.
"""

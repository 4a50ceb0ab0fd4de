"""Git webhook ingress: verify a provider's delivery and turn it into a git.push.v1 event."""

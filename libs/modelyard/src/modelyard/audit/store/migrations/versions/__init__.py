"""The audit store's schema versions, oldest first."""

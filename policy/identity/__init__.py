"""Token validation, split like keystonemiddleware's auth_token: the cache,
the Keystone client, and the front that ties them together."""

from policy.identity.cache import TokenCache
from policy.identity.keystone import KeystoneClient
from policy.identity.validator import TokenValidator

__all__ = ["KeystoneClient", "TokenCache", "TokenValidator"]

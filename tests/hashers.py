"""The suite's password hasher: Django's PBKDF2-SHA256 with few iterations.

Django's default (1,000,000 iterations) costs ~0.5 s per hash on the CI machine, and the suite
hashes for every reviewer its fixtures create and every `client.login`. The suite's strength
claims are about who may do what, not the hash's cost; this one writes the same
`pbkdf2_sha256$<iterations>$…` format, which any process on Django's default hashers verifies
(the iteration count is read from the hash): the servers and workers a test starts, which keep
the defaults, still log these users in (and upgrade the hash as they would an old one)."""

from __future__ import annotations

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class FastPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    iterations = 1_000

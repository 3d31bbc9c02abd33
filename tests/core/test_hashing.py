"""Secret hashing: argon2 successes are remembered per process, failures never are."""

from __future__ import annotations

from tabard.core.hashing import argon2_hash, argon2_verify


class TestArgon2Verify:
    async def test_right_secret_verifies_and_again_from_memory(self) -> None:
        encoded = argon2_hash("correct horse battery staple")
        assert await argon2_verify(encoded, "correct horse battery staple")
        assert await argon2_verify(encoded, "correct horse battery staple")

    async def test_wrong_secret_fails_even_after_the_right_one_succeeded(self) -> None:
        encoded = argon2_hash("correct horse battery staple")
        assert await argon2_verify(encoded, "correct horse battery staple")
        assert not await argon2_verify(encoded, "correct horse battery stapler")

    async def test_a_remembered_secret_does_not_match_another_hash(self) -> None:
        first = argon2_hash("secret one")
        second = argon2_hash("secret two")
        assert await argon2_verify(first, "secret one")
        assert not await argon2_verify(second, "secret one")

    async def test_garbage_hash_is_a_mismatch_not_an_error(self) -> None:
        assert not await argon2_verify("not-an-argon2-hash", "anything")

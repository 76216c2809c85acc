"""The validation cache on its own: reused for a cache lifetime, or while the revocation watermark (its own reader,
on an injected clock) stays put; forgotten on a refusal, a revocation naming it, or a flush."""

from __future__ import annotations

import pytest

from gateway.clock import ManualClock
from gateway.credentials import Principal, Refusal, ValidationCache, Verified, Watermark
from gateway.credentials.cache import MAX_ENTRY_AGE
from gateway.revocation import Revocation
from gateway.storage.base import StorageUnavailable

TTL = 0.8
ALICE = Principal(user_id="u-alice", email="a@example.com", method="api_key", credential_id="key-1")
ALICE_TOKEN = Principal(user_id="u-alice", email="a@example.com", method="oauth", credential_id="family-1")
BOB = Principal(user_id="u-bob", email="b@example.com", method="api_key", credential_id="key-2")


class Epochs:
    """A revocation watermark the test moves (or breaks)."""

    def __init__(self) -> None:
        self.epoch = 1
        self.down = False

    async def revocation_epoch(self) -> int:
        if self.down:
            raise StorageUnavailable("down")
        return self.epoch


class Source:
    """A credential store answering ``result``, counting the loads."""

    def __init__(self, result: Verified | Refusal) -> None:
        self.result = result
        self.loads = 0

    async def load(self) -> Verified | Refusal:
        self.loads += 1
        return self.result


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def epochs() -> Epochs:
    return Epochs()


@pytest.fixture
def watermark(epochs: Epochs, clock: ManualClock) -> Watermark:
    return Watermark(epochs, clock, interval=0.5)


@pytest.fixture
def cache(clock: ManualClock, watermark: Watermark) -> ValidationCache:
    return ValidationCache(clock, watermark, ttl=TTL)


async def test_a_validation_is_reused_within_the_cache_lifetime_and_reloaded_after_it_without_a_watermark(
    cache: ValidationCache, clock: ManualClock
):
    source = Source(Verified(ALICE, None))
    assert await cache.validation("d1", source.load) == Verified(ALICE, None)
    clock.advance(TTL - 0.01)
    await cache.validation("d1", source.load)
    assert source.loads == 1
    clock.advance(0.02)
    await cache.validation("d1", source.load)
    assert source.loads == 2


async def test_a_validation_read_under_a_watermark_seen_unchanged_within_the_lifetime_is_reused_past_it(
    cache: ValidationCache, watermark: Watermark, clock: ManualClock
):
    await watermark.read()
    source = Source(Verified(ALICE, None))
    await cache.validation("d1", source.load)
    for _ in range(20):  # ten seconds of quiet half-second reads
        clock.advance(0.5)
        await watermark.read()
        await cache.validation("d1", source.load)
    assert source.loads == 1
    assert cache.under_current_watermark("d1")


async def test_a_moved_watermark_sends_the_next_request_to_storage(
    cache: ValidationCache, watermark: Watermark, epochs: Epochs, clock: ManualClock
):
    await watermark.read()
    source = Source(Verified(ALICE, None))
    await cache.validation("d1", source.load)
    clock.advance(0.5)
    epochs.epoch = 2
    await watermark.read()
    assert not cache.under_current_watermark("d1")
    clock.advance(0.5)  # past the lifetime
    await cache.validation("d1", source.load)
    assert source.loads == 2
    assert cache.under_current_watermark("d1")


async def test_a_watermark_not_read_for_a_cache_lifetime_no_longer_vouches_for_anything(
    cache: ValidationCache, watermark: Watermark, epochs: Epochs, clock: ManualClock
):
    await watermark.read()
    source = Source(Verified(ALICE, None))
    await cache.validation("d1", source.load)
    epochs.down = True
    clock.advance(0.5)
    assert await watermark.read() is None
    assert watermark.epoch == 1  # the last good reading is kept, but it ages
    clock.advance(0.5)
    await cache.validation("d1", source.load)
    assert source.loads == 2


async def test_an_unchanged_watermark_vouches_for_a_validation_no_longer_than_the_maximum_entry_age(
    cache: ValidationCache, watermark: Watermark, clock: ManualClock
):
    await watermark.read()
    source = Source(Verified(ALICE, None))
    await cache.validation("d1", source.load)
    clock.advance(MAX_ENTRY_AGE)
    await watermark.read()
    await cache.validation("d1", source.load)
    assert source.loads == 2


async def test_a_revocation_committed_while_a_validation_is_read_leaves_it_outside_the_current_watermark(
    cache: ValidationCache, watermark: Watermark, epochs: Epochs, clock: ManualClock
):
    await watermark.read()

    async def load_while_revoking() -> Verified | Refusal:
        epochs.epoch = 2
        await watermark.read()  # the watermark moved while the row was being read
        return Verified(ALICE, None)

    await cache.validation("d1", load_while_revoking)
    assert not cache.under_current_watermark("d1")
    clock.advance(TTL)
    source = Source(Verified(ALICE, None))
    await cache.validation("d1", source.load)
    assert source.loads == 1


async def test_a_refusal_is_not_cached_and_forgets_the_earlier_validation(cache: ValidationCache, clock: ManualClock):
    await cache.validation("d1", Source(Verified(ALICE, 123.0)).load)
    assert cache.expiry_of("d1") == 123.0
    refused = Source(Refusal("revoked"))
    assert await cache.reload("d1", refused.load) == Refusal("revoked")
    assert cache.expiry_of("d1") is None
    assert len(cache) == 0
    assert await cache.validation("d1", refused.load) == Refusal("revoked")
    assert refused.loads == 2


async def test_a_storage_error_while_loading_propagates_and_keeps_nothing(cache: ValidationCache):
    async def broken() -> Verified | Refusal:
        raise StorageUnavailable("down")

    with pytest.raises(StorageUnavailable):
        await cache.validation("d1", broken)
    assert len(cache) == 0


async def test_a_revocation_drops_exactly_the_validations_it_names(cache: ValidationCache):
    await cache.validation("key", Source(Verified(ALICE, None)).load)
    await cache.validation("token", Source(Verified(ALICE_TOKEN, None)).load)
    await cache.validation("bob", Source(Verified(BOB, None)).load)

    cache.drop_revoked(Revocation(account_id="u-alice", committed_at=0, api_key_ids=("key-1",)))
    assert cache.expiry_of("key") is None
    assert len(cache) == 2

    cache.drop_revoked(Revocation(account_id="u-bob", committed_at=0, family_ids=("key-2",)))  # a family, not a key
    assert len(cache) == 2

    await cache.validation("key", Source(Verified(ALICE, None)).load)
    cache.drop_revoked(Revocation(account_id="u-alice", committed_at=0, all_credentials=True))
    assert len(cache) == 1
    assert not cache.under_current_watermark("token")


async def test_the_oldest_validation_is_evicted_beyond_the_size_and_a_flush_forgets_all(
    clock: ManualClock, watermark: Watermark
):
    cache = ValidationCache(clock, watermark, ttl=TTL, size=2)
    for digest, principal in (("a", ALICE), ("b", ALICE_TOKEN), ("c", BOB)):
        await cache.validation(digest, Source(Verified(principal, 1.0)).load)
    assert [cache.expiry_of(d) for d in "abc"] == [None, 1.0, 1.0]
    cache.drop_revoked(Revocation(account_id="u-alice", committed_at=0, api_key_ids=("key-1",)))  # evicted already
    assert len(cache) == 2
    cache.flush()
    assert len(cache) == 0


async def test_the_cache_lifetime_never_exceeds_one_second(clock: ManualClock, watermark: Watermark):
    cache = ValidationCache(clock, watermark, ttl=5.0)
    source = Source(Verified(ALICE, None))
    await cache.validation("d1", source.load)
    clock.advance(1.0)
    await cache.validation("d1", source.load)
    assert source.loads == 2


async def test_every_watermark_listener_hears_each_read_even_when_another_one_fails(
    watermark: Watermark, epochs: Epochs
):
    heard: list[int | None] = []

    async def failing(epoch: int | None) -> None:
        raise RuntimeError("boom")

    async def hearing(epoch: int | None) -> None:
        heard.append(epoch)

    watermark.listen(failing)
    watermark.listen(hearing)
    await watermark.read()
    epochs.down = True
    await watermark.read()
    assert heard == [1, None]

"""Secrets without services: the keyring format, sealing, the store's layout and the reader.

The store and the worker's reader run on fakeredis (one FakeServer shared by the async and
the sync client, as in dev mode); the real-Redis paths are in tests/api/test_secrets.py and
tests/hardening/test_secrets_never_leak.py.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest

from flotilla.config import FunctionConfig
from flotilla.errors import BodyTooLarge, InvalidRequest, SettingsError, TooManySecrets
from flotilla.hosts.base import HostError, InvocationContext
from flotilla.hosts.cache import connect_redis
from flotilla.hosts.secrets import RedisSecrets
from flotilla.secrets import (
    MAX_VALUE_BYTES,
    Keyring,
    Sealed,
    SecretBox,
    SecretStore,
    SecretUnreadable,
    check_name,
    decode_value,
    new_key,
)
from flotilla.settings import DispatcherSettings, WorkerSettings
from tests.services import free_port

K1 = "k1:" + base64.b64encode(bytes(range(32))).decode()
K2 = "k2:" + base64.b64encode(bytes(range(32, 64))).decode()
VALUE = "p@ss wörd ✓ 0123456789"


def ctx(function: str, deadline_s: float = 5.0) -> InvocationContext:
    """An invocation context of `function`."""
    return InvocationContext(FunctionConfig(name=function), "inv-1", time.monotonic() + deadline_s)


# --- the keyring -------------------------------------------------------------------------


def test_keyring_first_key_seals_every_key_opens() -> None:
    ring = Keyring.parse(f" {K2} , {K1},")
    assert ring.current == "k2"
    assert ring.ids == ("k2", "k1")
    assert ring.cipher("k1") is not None and ring.cipher("k3") is None


def test_keyring_accepts_url_safe_base64() -> None:
    raw = bytes([0xFB, 0xFF] * 16)  # encodes with + and / in standard base64
    url_safe = base64.urlsafe_b64encode(raw).decode()
    assert "-" in url_safe or "_" in url_safe
    assert Keyring.parse(f"u:{url_safe}").current == "u"


@pytest.mark.parametrize(("text", "message"), [
    ("", "holds no key"),
    (" , ", "holds no key"),
    (base64.b64encode(b"x" * 32).decode(), "entry 1 is not `kid:base64"),
    ("bad id:" + base64.b64encode(b"x" * 32).decode(), "entry 1 is not"),
    ("k:" + base64.b64encode(b"x" * 16).decode(), "entry 1 (k): the key must be 32 bytes"),
    ("k:not*base64!", "must be 32 bytes"),
    (f"{K1},{K1}", "names key id 'k1' twice"),
    (f"{K1},k3", "entry 2 is not"),
])
def test_keyring_refuses_malformed_keys_without_quoting_them(text: str, message: str) -> None:
    with pytest.raises(SettingsError, match=None) as caught:
        Keyring.parse(text)
    assert message in str(caught.value)
    for part in text.replace(",", ":").split(":"):
        if len(part.strip()) > 8:
            assert part.strip() not in str(caught.value)  # key material is never echoed


def test_new_key_parses_and_is_random() -> None:
    first, second = new_key("prod-2"), new_key("prod-2")
    assert first != second and first.startswith("prod-2:")
    assert Keyring.parse(first).current == "prod-2"
    with pytest.raises(SettingsError, match="key id"):
        new_key("no spaces")


def test_settings_never_show_the_key() -> None:
    for cls in (WorkerSettings, DispatcherSettings):
        settings = cls.from_env({"FLOTILLA_SECRETS_KEY": K1})
        assert settings.secrets_key == K1
        assert K1.split(":")[1] not in repr(settings)


# --- sealing -------------------------------------------------------------------------------


def test_seal_and_open_round_trip_with_a_fresh_nonce_each_time() -> None:
    box = SecretBox(Keyring.parse(K1), "p")
    one = box.seal("fn", "token", VALUE, updated_at=1.5)
    two = box.seal("fn", "token", VALUE, updated_at=1.5)
    assert one.nonce != two.nonce and len(one.nonce) == 12
    assert one.ciphertext != two.ciphertext
    assert box.open("fn", "token", one.encode()) == VALUE
    record = one.encode()
    assert VALUE.encode() not in record and b"p@ss" not in record
    assert json.loads(record)["kid"] == "k1"
    assert Sealed.decode(record) == one


@pytest.mark.parametrize(("function", "name"), [("other", "token"), ("fn", "token2")])
def test_a_record_moved_to_another_function_or_name_does_not_open(
    function: str, name: str
) -> None:
    box = SecretBox(Keyring.parse(K1), "p")
    record = box.seal("fn", "token", VALUE, updated_at=1).encode()
    with pytest.raises(SecretUnreadable, match="altered or moved") as caught:
        box.open(function, name, record)
    assert VALUE not in str(caught.value)


def test_tampered_unknown_key_and_malformed_records_do_not_open() -> None:
    box = SecretBox(Keyring.parse(K1), "p")
    sealed = box.seal("fn", "token", VALUE, updated_at=1)
    flipped = bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]
    tampered = Sealed(sealed.kid, sealed.nonce, flipped, 1).encode()
    with pytest.raises(SecretUnreadable, match="altered"):
        box.open("fn", "token", tampered)
    other = SecretBox(Keyring.parse(K2), "p")
    with pytest.raises(SecretUnreadable, match="sealed with key 'k1', which FLOTILLA_SECRETS_KEY"):
        other.open("fn", "token", sealed.encode())
    for junk in (b"", b"{}", b"not json", b'{"v": 2, "kid": "k1"}', b"[1]",
                 b'{"v":1,"kid":"k1","nonce":"!!","ct":"","updated_at":1}'):
        with pytest.raises(SecretUnreadable, match="not a sealed secret record"):
            box.open("fn", "token", junk)


def test_reseal_moves_a_value_to_the_current_key_and_keeps_its_time() -> None:
    old = SecretBox(Keyring.parse(K1), "p")
    record = old.seal("fn", "token", VALUE, updated_at=42.0).encode()
    both = SecretBox(Keyring.parse(f"{K2},{K1}"), "p")
    assert both.open("fn", "token", record) == VALUE  # the old key still opens
    resealed = both.reseal("fn", "token", record)
    assert resealed is not None
    assert both.reseal("fn", "token", resealed) is None  # already current
    new_only = SecretBox(Keyring.parse(K2), "p")
    assert new_only.open("fn", "token", resealed) == VALUE
    assert new_only.info("token", resealed).updated_at == 42.0


@pytest.mark.parametrize(("name", "ok"), [
    ("token", True), ("_x", True), ("API_KEY.v2-b", True), ("A" * 128, True),
    ("", False), ("1token", False), ("-x", False), ("a b", False), ("a/b", False),
    ("a\0b", False), ("A" * 129, False), ("tökén", False), ("token\n", False),
])
def test_secret_names(name: str, ok: bool) -> None:
    assert (check_name(name) is None) is ok


def test_values_are_1_byte_to_64_kib_of_utf8() -> None:
    assert decode_value("é".encode()) == "é"
    assert len(decode_value(b"x" * MAX_VALUE_BYTES)) == MAX_VALUE_BYTES
    with pytest.raises(BodyTooLarge):
        decode_value(b"x" * (MAX_VALUE_BYTES + 1))
    with pytest.raises(InvalidRequest, match="empty"):
        decode_value(b"")
    with pytest.raises(InvalidRequest, match="UTF-8"):
        decode_value(b"\xff\xfe")


# --- the store and the reader on one fake server ----------------------------------------


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
async def store(server: fakeredis.FakeServer) -> AsyncIterator[SecretStore]:
    redis = fakeredis.FakeAsyncRedis(server=server)
    yield SecretStore(redis, Keyring.parse(K1), prefix="p", max_secrets=3)
    await redis.aclose()


def reader(server: fakeredis.FakeServer, keys: str = K1, **kwargs: Any) -> RedisSecrets:
    """The worker's reader on the same fake server."""
    return RedisSecrets(fakeredis.FakeRedis(server=server), SecretBox(Keyring.parse(keys), "p"),
                        **kwargs)


async def test_put_list_delete_and_the_index(
    store: SecretStore, server: fakeredis.FakeServer
) -> None:
    info, created = await store.put("fn", "token", VALUE)
    assert created and info.name == "token" and info.key_id == "k1"
    _, created = await store.put("fn", "token", VALUE + "2")
    assert not created
    await store.put("fn", "a_first", "x")
    listed = await store.list("fn")
    assert [i.name for i in listed] == ["a_first", "token"]
    assert all(set(i.to_dict()) == {"name", "updated_at"} for i in listed)
    assert await store.get("fn", "token") == VALUE + "2"
    raw = fakeredis.FakeRedis(server=server)
    assert raw.smembers("p:secrets") == {b"fn"}
    assert all(VALUE.encode() not in v for v in raw.hgetall("p:secrets:fn").values())
    assert await store.delete("fn", "token") and not await store.delete("fn", "token")
    assert await store.delete("fn", "a_first")
    assert raw.smembers("p:secrets") == set() and not raw.exists("p:secrets:fn")
    assert await store.list("fn") == []


async def test_a_function_holds_at_most_max_secrets(store: SecretStore) -> None:
    for i in range(3):
        await store.put("fn", f"s{i}", "v")
    with pytest.raises(TooManySecrets, match="already has 3 secrets"):
        await store.put("fn", "s3", "v")
    _, created = await store.put("fn", "s0", "replaced")  # replacing is not adding
    assert not created
    await store.put("other", "s3", "v")  # the limit is per function


async def test_store_validates_names_and_values(store: SecretStore) -> None:
    for function, name, value in (("Bad", "ok", "v"), ("fn", "1bad", "v"), ("fn", "ok", "")):
        with pytest.raises(InvalidRequest):
            await store.put(function, name, value)
    with pytest.raises(BodyTooLarge):
        await store.put("fn", "ok", "é" * (MAX_VALUE_BYTES // 2 + 1))


async def test_reader_sees_only_the_invocations_own_function(
    store: SecretStore, server: fakeredis.FakeServer
) -> None:
    await store.put("fn", "token", VALUE)
    await store.put("other", "token", "theirs")
    seen: list[tuple[str, str, str]] = []
    r = reader(server, observe=lambda i, op, outcome, s: seen.append((i, op, outcome)))
    assert r.get(ctx("fn"), "token") == VALUE
    assert r.get(ctx("other"), "token") == "theirs"
    assert r.get(ctx("third"), "token") is None
    assert r.get(ctx("fn"), "missing") is None
    assert r.get(ctx("fn"), "../other/token") is None  # not a name: no lookup at all
    assert seen[0] == ("secrets", "get", "ok") and len(seen) == 5
    await store.put("fn", "token", "changed")
    assert r.get(ctx("fn"), "token") == "changed"  # nothing cached
    await store.delete("fn", "token")
    assert r.get(ctx("fn"), "token") is None


async def test_reader_answers_unavailable_without_revealing_anything(
    store: SecretStore, server: fakeredis.FakeServer
) -> None:
    await store.put("fn", "token", VALUE)
    with pytest.raises(HostError) as caught:
        reader(server, keys=K2).get(ctx("fn"), "token")  # a worker without the sealing key
    assert caught.value.case == "unavailable" and "'k1'" in str(caught.value.detail)
    assert VALUE not in str(caught.value)
    with pytest.raises(HostError, match="deadline"):
        reader(server).get(ctx("fn", deadline_s=-1), "token")
    down = RedisSecrets(connect_redis(f"redis://127.0.0.1:{free_port()}/0"),
                        SecretBox(Keyring.parse(K1), "p"))
    with pytest.raises(HostError) as caught:
        down.get(ctx("fn"), "token")
    assert caught.value.case == "unavailable" and "secret store is unavailable" in str(
        caught.value.detail)


async def test_rotate_reseals_everything_under_the_new_key(server: fakeredis.FakeServer) -> None:
    redis = fakeredis.FakeAsyncRedis(server=server)
    old = SecretStore(redis, Keyring.parse(K1), prefix="p")
    values = {("a", "one"): "1", ("a", "two"): "2", ("b", "one"): VALUE}
    for (function, name), value in values.items():
        await old.put(function, name, value)
    before = {i.name: i.updated_at for i in await old.list("a")}
    rotating = SecretStore(redis, Keyring.parse(f"{K2},{K1}"), prefix="p")
    assert await rotating.get("b", "one") == VALUE  # the old key opens before the rotation
    report = await rotating.rotate()
    assert (report.resealed, report.current, report.failed) == (3, 0, [])
    again = await rotating.rotate()
    assert (again.resealed, again.current) == (0, 3)
    new_only = SecretStore(redis, Keyring.parse(K2), prefix="p")
    for (function, name), value in values.items():
        assert await new_only.get(function, name) == value
    assert {i.name: i.updated_at for i in await new_only.list("a")} == before
    assert {i.key_id for i in await new_only.list("a")} == {"k2"}
    await redis.aclose()


async def test_rotate_reports_values_it_cannot_open_and_keeps_them(
    server: fakeredis.FakeServer,
) -> None:
    redis = fakeredis.FakeAsyncRedis(server=server)
    await SecretStore(redis, Keyring.parse(K1), prefix="p").put("a", "lost", "v")
    k3 = new_key("k3")
    report = await SecretStore(redis, Keyring.parse(f"{k3},{K2}"), prefix="p").rotate()
    assert report.resealed == 0
    assert [(f, n) for f, n, _ in report.failed] == [("a", "lost")]
    assert "'k1'" in report.failed[0][2]
    assert await SecretStore(redis, Keyring.parse(K1), prefix="p").get("a", "lost") == "v"
    await redis.aclose()


async def test_rotation_never_overwrites_a_newer_write(store: SecretStore) -> None:
    await store.put("fn", "token", "old")
    key = store.box.hash_key("fn")
    stale = await store.redis.hget(key, "token")
    await store.put("fn", "token", "new")  # written between rotate's read and its replace
    replaced = await store._replace(keys=[key], args=["token", stale, b"whatever"])
    assert replaced == 0
    assert await store.get("fn", "token") == "new"

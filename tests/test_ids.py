"""gateway.ids: the OS's randomness in slices, never the same bytes twice."""

from __future__ import annotations

import threading

from gateway import ids


def test_ids_are_unique_hex_of_the_requested_size() -> None:
    seen = {ids.random_hex(48) for _ in range(20000)}  # crosses several 64 KiB refills
    assert len(seen) == 20000
    assert all(len(value) == 12 and int(value, 16) >= 0 for value in seen)
    assert len(ids.random_bytes(100000)) == 100000  # larger than one chunk


def test_threads_never_share_a_slice() -> None:
    out: list[list[bytes]] = [[] for _ in range(4)]

    def draw(bucket: list[bytes]) -> None:
        bucket.extend(ids.random_bytes(16) for _ in range(5000))

    threads = [threading.Thread(target=draw, args=(bucket,)) for bucket in out]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    values = [value for bucket in out for value in bucket]
    assert len(set(values)) == len(values) == 20000

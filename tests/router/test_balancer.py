"""The router's balancer: CHWBL's stickiness and load bound, least-loaded, exclusions."""
from __future__ import annotations

from collections import Counter

from modelyard.server.router.balancer import Balancer, load_ok

PODS = ["127.16.0.1:8083", "127.16.0.2:8083", "127.16.0.3:8083"]


def balancer(pods=PODS) -> Balancer:
    b = Balancer()
    b.set_endpoints(pods)
    return b


def test_load_bound_is_kubeais():
    # internal/loadbalancer/balance_chwbl.go, chwblLoadOK: load + 1 <= (total + 1) / n * factor
    assert load_ok(0, 0, 3, 1.25)  # an idle group takes anything
    # 5 in flight over 3 pods, one more coming: mean 2, bound 2.5; with it, a pod's load + 1
    assert load_ok(1, 5, 3, 1.25)
    assert not load_ok(2, 5, 3, 1.25)
    # One in flight over 3 pods: the bound is 0.83, so not even an idle pod is within it (the
    # walk then ends at the first pod on the ring, the key's home).
    assert not load_ok(0, 1, 3, 1.25)


def test_same_key_same_pod_while_under_the_bound():
    b = balancer()
    first = b.pick("tiny\nYou are a pirate.\nhello")
    assert all(b.pick("tiny\nYou are a pirate.\nhello") == first for _ in range(20))


def test_keys_spread_over_the_ring():
    b = balancer()
    picks = Counter(b.pick(f"tiny\nuser {i}") for i in range(600))
    assert set(picks) == set(PODS)
    assert min(picks.values()) > 100  # 256 points per pod: no pod gets a sliver


def test_a_loaded_pod_spills_to_the_next_on_the_ring():
    b = balancer()
    key = "tiny\nlong system prompt"
    home = b.pick(key)
    for _ in range(3):
        b.acquire(home)
    # 3 in flight, all on home: mean with the new one 4/3, bound 5/3 < 3
    other = b.pick(key)
    assert other != home
    # The spill goes to the same next pod each time (the ring order), not at random.
    assert b.pick(key) == other
    for _ in range(3):
        b.release(home)
    assert b.pick(key) == home


def test_every_pod_above_the_bound_gives_the_first_on_the_ring():
    b = balancer(PODS[:1])
    b.acquire(PODS[0])
    b.acquire(PODS[0])
    assert b.pick("k") == PODS[0]  # one pod: the bound is its own load + 1 times 1.25


def test_least_loaded_without_a_key():
    b = balancer()
    b.acquire(PODS[0])
    b.acquire(PODS[1])
    assert b.pick(None) == PODS[2]
    b.acquire(PODS[2])
    b.acquire(PODS[2])
    assert b.pick(None) in PODS[:2]


def test_idle_pods_share_requests_without_a_key():
    b = balancer()
    assert {b.pick(None) for _ in range(6)} == set(PODS)


def test_excluded_pods_are_skipped_then_none():
    b = balancer()
    key = "tiny\nhello"
    home = b.pick(key)
    second = b.pick(key, exclude=[home])
    assert second not in (home, None)
    third = b.pick(key, exclude=[home, second])
    assert third not in (home, second, None)
    assert b.pick(key, exclude=PODS) is None
    assert b.pick(None, exclude=PODS) is None


def test_pods_that_stay_keep_their_load_and_their_keys():
    b = balancer()
    keys = [f"k{i}" for i in range(200)]
    before = {k: b.pick(k) for k in keys}
    b.acquire(PODS[0])
    b.set_endpoints(PODS + ["127.16.0.4:8083"])
    assert b.loads[PODS[0]] == 1
    b.release(PODS[0])
    after = {k: b.pick(k) for k in keys}
    moved = [k for k in keys if after[k] != before[k]]
    # Consistent hashing: only the keys the new pod takes move, about a quarter.
    assert all(after[k] == "127.16.0.4:8083" for k in moved)
    assert 20 < len(moved) < 90


def test_no_endpoints():
    b = Balancer()
    assert b.pick("k") is None and b.pick(None) is None
    b.release("gone:1")  # releasing a pod that left is harmless


def test_one_conversation_on_different_adapters_spreads_and_each_sticks():
    from modelyard.server.router.locate import balance_key

    b = balancer()
    chat = {"messages": [{"role": "system", "content": "One long shared system prompt."},
                         {"role": "user", "content": "hello"}]}
    keys = [balance_key("tiny", {**chat, "lora": [{"id": f"adapter-{i}"}]}, 4096) for i in range(30)]
    homes = [b.pick(k) for k in keys]
    assert len(set(homes)) == len(PODS)  # the adapters' conversations are not all on one pod
    later = {**chat, "messages": chat["messages"] + [{"role": "assistant", "content": "hi"},
                                                     {"role": "user", "content": "again"}]}
    for i, home in enumerate(homes):
        assert b.pick(balance_key("tiny", {**later, "lora": [{"id": f"adapter-{i}", "scale": 1}]}, 4096)) == home

"""The autoscaler's pure decision: samples, time and settings in, replicas and a reason out."""
from __future__ import annotations

import pytest

from modelyard.operator.autoscaling import Autoscaler, Settings, in_flight

FOUR = Settings(min_replicas=1, max_replicas=5, target_requests=8, scale_down_delay=30)


def run(autoscaler, ticks, settings=FOUR, current=1, settled=True):
    """Feed (time, in flight) ticks, applying each decision as the operator would."""
    decisions = []
    for now, load in ticks:
        decision = autoscaler.decide(now, load, current, settled, settings)
        if decision.changed:
            decisions.append((now, decision))
            current = decision.replicas
    return current, decisions


def test_defaults_come_from_the_spec():
    assert Settings.from_spec({}) is None
    assert Settings.from_spec({"autoscaling": {"maxReplicas": 3}}) == Settings(1, 3, 4, 30.0)
    spec = {"autoscaling": {"minReplicas": 0, "maxReplicas": 9, "targetRequests": 2, "scaleDownDelaySeconds": 5}}
    assert Settings.from_spec(spec) == Settings(0, 9, 2, 5.0)


def test_up_at_once_with_the_reason_in_words():
    decision = Autoscaler(window=0).decide(0.0, 38, 3, True, FOUR)
    assert (decision.previous, decision.replicas, decision.reason) == (3, 5, "ScaledUp")
    assert decision.message == "3 -> 5: 38 requests in flight, target 8 per replica"


def test_up_is_capped_at_max_and_exact_multiples_do_not_round_up():
    assert Autoscaler(window=0).decide(0.0, 500, 1, True, FOUR).replicas == 5
    assert not Autoscaler(window=0).decide(0.0, 16, 2, True, FOUR).changed


def test_the_average_over_the_window_smooths_a_spike():
    scaler = Autoscaler(window=20)
    current, decisions = run(scaler, [(0, 0), (10, 0), (20, 24)])
    # (0 + 0 + 24) / 3 = 8 requests: one replica's worth, no change yet
    assert decisions == [] and current == 1
    current, decisions = run(scaler, [(30, 24)], current=current)
    # the sample at 0 left the window: (0 + 24 + 24) / 3 = 16 -> 2
    assert current == 2 and decisions[0][1].message == "1 -> 2: 16 requests in flight, target 8 per replica"


def test_down_only_after_the_delay_and_to_the_highest_asked_for():
    scaler = Autoscaler(window=0)
    current, _ = run(scaler, [(0, 40)])
    assert current == 5
    # the load falls to 2 replicas' worth, then to none
    current, decisions = run(scaler, [(10, 16), (20, 0), (29, 0)], current=current)
    assert decisions == [] and current == 5  # 29 s since the last time 5 were wanted
    current, decisions = run(scaler, [(31, 0)], current=current)
    # 5 was asked for at 0 (out of the 30 s now); 2 at 10: the highest in the delay wins
    [(_, decision)] = decisions
    assert (current, decision.reason) == (2, "ScaledDown")
    assert decision.message == "5 -> 2: at most 16 requests in flight in the last 30 s, target 8 per replica"
    current, _ = run(scaler, [(41, 0)], current=current)
    assert current == 1  # min


def test_no_scale_down_before_a_whole_delay_was_watched():
    """A restarted operator has no history: it must not shrink on its first quiet tick."""
    scaler = Autoscaler(window=0)
    current, decisions = run(scaler, [(0, 0), (29, 0)], current=3)
    assert decisions == [] and current == 3
    current, _ = run(scaler, [(30, 0)], current=3)
    assert current == 1


def test_a_pod_still_loading_holds_the_scale_down_and_restarts_the_delay():
    scaler = Autoscaler(window=0)
    settings = Settings(min_replicas=0, max_replicas=3, target_requests=4, scale_down_delay=10)
    # at zero for a long while; then the router wakes the Model: 1 pod, loading
    current, _ = run(scaler, [(0, 0), (100, 0)], settings=settings, current=0)
    assert current == 0
    current, decisions = run(scaler, [(110, 0), (130, 0)], settings=settings, current=1, settled=False)
    assert decisions == [] and current == 1
    # it serves from 130 on; its request ended before the first tick saw it
    current, decisions = run(scaler, [(135, 0)], settings=settings, current=1)
    assert decisions == [] and current == 1  # the delay counts from the last unsettled tick
    current, decisions = run(scaler, [(141, 0)], settings=settings, current=1)
    assert current == 0 and decisions[0][1].message.startswith("1 -> 0: at most 0 requests in flight")


def test_replicas_outside_the_bounds_move_in_at_once():
    settings = Settings(min_replicas=2, max_replicas=4, target_requests=4, scale_down_delay=60)
    up = Autoscaler(window=0).decide(0.0, 0, 1, True, settings)
    assert (up.replicas, up.message) == (2, "1 -> 2: minReplicas is 2 (0 requests in flight, target 4 per replica)")
    down = Autoscaler(window=0).decide(0.0, 0, 9, True, settings)
    assert (down.replicas, down.reason) == (4, "ScaledDown")


def test_zero_delay_scales_down_on_the_first_quiet_tick():
    settings = Settings(min_replicas=0, max_replicas=2, target_requests=1, scale_down_delay=0)
    assert Autoscaler(window=0).decide(0.0, 0, 2, True, settings).replicas == 0


METRICS = """\
# HELP modelyard_queue_depth Requests waiting for a slot
# TYPE modelyard_queue_depth gauge
modelyard_queue_depth{model="chat"} 3.0
modelyard_queue_depth{model="other"} 7.0
# HELP modelyard_active_sequences Sequences being decoded
# TYPE modelyard_active_sequences gauge
modelyard_active_sequences{model="chat"} 4.0
modelyard_active_sequences_created{model="chat"} 1.7e+09
modelyard_requests_total{method="POST",model="chat",route="/v1/chat/completions",status="200"} 9.0
"""


@pytest.mark.parametrize("model, expected", [("chat", 7.0), ("other", 7.0), ("absent", 0.0)])
def test_in_flight_reads_the_two_gauges_of_one_model(model, expected):
    assert in_flight(METRICS, model) == expected

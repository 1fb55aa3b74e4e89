"""The FineTune's plan as a pure function: what it makes, what it says, and when it says it."""
from __future__ import annotations

from modelyard.operator.training import TrainingObserved, last_training_events, plan_training

from .conftest import NOW, make_model

FT = {"apiVersion": "modelyard.dev/v1alpha1", "kind": "FineTune",
      "metadata": {"name": "sql-lora", "namespace": "ai", "uid": "uid-ft", "generation": 1},
      "spec": {"baseModel": "smollm2-360m", "dataset": {"url": "https://example.com/d.jsonl"}}}


def downloaded(model):
    model["status"] = {"phase": "Ready", "conditions": [{"type": "Downloaded", "status": "True"}]}
    return model


def again(observed, settings, result):
    """The next pass, after the status was written."""
    observed.finetune = {**observed.finetune, "status": result.status}
    return plan_training(observed, settings, now=NOW)


def test_an_event_once_per_reason_and_the_job_once_the_base_is_downloaded(settings):
    observed = TrainingObserved(FT, base=make_model())
    first = plan_training(observed, settings, now=NOW)
    assert first.actions == [] and first.status["phase"] == "Pending"
    assert [e[:2] for e in first.events] == [("Warning", "BaseNotReady")]
    assert again(observed, settings, first).events == []  # a resync says nothing new
    observed.base = downloaded(make_model())
    started = plan_training(observed, settings, now=NOW)
    [create] = started.actions
    assert (create.verb, create.resource, create.name) == ("create", "jobs", "sql-lora-train")
    command = create.body["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--dataset") + 1] == "https://example.com/d.jsonl"


def test_a_base_that_is_not_an_llm_fails_and_a_finished_run_stays_finished(settings):
    embed = downloaded(make_model(kind="embed"))
    failed = plan_training(TrainingObserved(FT, base=embed), settings, now=NOW)
    assert failed.status["phase"] == "Failed" and failed.events[0][1] == "BaseNotTrainable"
    done = {**FT, "status": {"phase": "Succeeded", "progress": "100%"}}
    # Its Job was deleted since (or expired): nothing is made again, nothing changes.
    result = plan_training(TrainingObserved(done, base=downloaded(make_model())), settings, now=NOW)
    assert result.actions == [] and result.status["phase"] == "Succeeded" and result.events == []


def test_the_log_tail_reading():
    log = ('{"step": 1, "totalSteps": 4, "epoch": 1, "loss": 3.0}\nTraceback ...\n'
           '{"step": 2, "totalSteps": 4, "epoch": 1, "loss": 2.5}\n{"step": 3, "totalS')
    assert last_training_events(log) == {"step": 2, "totalSteps": 4, "epoch": 1, "loss": 2.5}
    assert last_training_events('{"error": {"message": "no"}}\n') == {"error": "no"}


def test_one_trainer_per_base_the_next_queues(settings):
    observed = TrainingObserved(FT, base=downloaded(make_model()), training_before="other-lora")
    queued = plan_training(observed, settings, now=NOW)
    assert queued.actions == [] and queued.status["phase"] == "Pending"
    assert queued.events == [("Normal", "Queued", "FineTune other-lora is training on Model smollm2-360m; "
                                                  "this one starts when it ends.")]
    observed.training_before = None
    [create] = plan_training(observed, settings, now=NOW).actions
    assert create.body["metadata"]["labels"]["modelyard.dev/base-model"] == "smollm2-360m"

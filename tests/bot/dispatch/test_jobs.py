"""Jobs and events survive JSON (the Redis transport), bad jobs are refused early, and fair batch selection."""

from __future__ import annotations

import json

import pytest

from bot.jobs import (
    EncodeResult,
    ImagineJob,
    ImagineResult,
    JobDone,
    JobFailed,
    JobProgress,
    JobQueued,
    JobStarted,
    PreviewJob,
    PreviewResult,
    QueueFullError,
    UserJobLimitError,
    batch_key,
    event_from_dict,
    event_to_dict,
    job_from_dict,
    new_job_id,
)
from bot.worker.fairness import FairQueue
from stylecodes.codec import CodeError, random_code
from tests.bot.dispatch.helpers import encode_job, imagine_job


def through_json(data: dict) -> dict:
    return json.loads(json.dumps(data))


@pytest.mark.parametrize(
    "job",
    [
        encode_job(1, b"\x00\x01binary\xff"),
        imagine_job(2, count=3, negative_prompt="blurry", strength=1.2),
        PreviewJob(new_job_id(), 3, revision_id=9, code=random_code(0).canonical, steps=5),
    ],
    ids=["encode", "imagine", "preview"],
)
def test_jobs_round_trip_through_json(job):
    assert job_from_dict(through_json(job.to_dict())) == job


def test_imagine_job_without_style_round_trips():
    from stylecodes.requests import GenerationRequest

    job = ImagineJob(new_job_id(), 1, None, 2, 0, [GenerationRequest("plain", seed=3)])
    assert job_from_dict(through_json(job.to_dict())) == job


@pytest.mark.parametrize(
    "event",
    [
        JobQueued(3),
        JobStarted(),
        JobProgress(2, 20, b"\x89PNG..."),
        JobProgress(2, 20, None),
        JobDone(EncodeResult([random_code(0)])),
        JobDone(ImagineResult([b"png1", b"png2"], [None, True], ["prompt truncated"], [{"seed": 1}, {"seed": 2}])),
        JobDone(PreviewResult(4, b"RIFF....WEBP")),
        JobFailed("The model failed.", JobFailed.ENGINE_ERROR),
    ],
)
def test_events_round_trip_through_json(event):
    assert event_from_dict(through_json(event_to_dict(event))) == event


def test_bad_jobs_are_refused_with_clear_errors():
    with pytest.raises(ValueError, match="unknown job kind 'paint'"):
        job_from_dict({"kind": "paint"})
    with pytest.raises(CodeError):
        PreviewJob(new_job_id(), 1, revision_id=1, code="not-a-code")
    mixed = imagine_job(1).requests + imagine_job(1, steps=7).requests
    with pytest.raises(ValueError, match="share batch_key"):
        ImagineJob(new_job_id(), 1, None, 2, 0, mixed)
    with pytest.raises(ValueError, match="at least one"):
        ImagineJob(new_job_id(), 1, None, 2, 0, [])
    with pytest.raises(ValueError, match="unknown job event kind"):
        event_from_dict({"kind": "exploded"})


def test_rejection_messages_are_for_users():
    assert str(QueueFullError(100)) == "The bot is busy (100 jobs are waiting), try again in a minute."
    assert "You already have 1 job queued or running" in str(UserJobLimitError(1))


def test_fair_queue_round_robin_and_sample_budget():
    queue = FairQueue()
    a1, a2 = imagine_job(1, count=2), imagine_job(1, count=1)
    b1 = imagine_job(2, count=3)
    c1, c2 = imagine_job(3, count=1), imagine_job(3, steps=9)  # c2 has another shape
    for job in (a1, a2, b1, c1, c2):
        queue.push(job)
    # Alice leads; Bob's 3 samples do not fit next to Alice's 2 (budget 4); Carol's 1 does; a second
    # pass fills the last sample with Alice's next job.
    assert queue.pop_batch(4) == [a1, c1, a2]
    # Alice and Carol were served, so Bob leads now; Carol's other job has another shape.
    assert queue.pop_batch(4) == [b1]
    assert queue.pop_batch(4) == [c2]
    assert queue.pop_batch(4) == []
    assert len(queue) == 0


def test_fair_queue_runs_an_oversized_job_alone_and_keeps_kinds_apart():
    queue = FairQueue()
    big, encode = imagine_job(1, count=4), encode_job(2)
    queue.push(big)
    queue.push(encode)
    assert batch_key(big) != batch_key(encode)
    assert queue.pop_batch(2) == [big]  # larger than the budget: alone, never stuck
    assert queue.pop_batch(2) == [encode]

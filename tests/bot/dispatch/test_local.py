"""The embedded dispatcher with the real demo engine (version 0) and the real registry (SQLite)."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from bot.dispatch.local import LocalDispatcher
from bot.jobs import (
    EncodeResult,
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
    new_job_id,
)
from bot.protocol.limits import DispatchLimits
from bot.worker.models import ModelCache
from stylecodes.images import load_image
from stylecodes.versions import UnservedVersionError
from tests.bot.dispatch.helpers import (
    RecordingEngine,
    encode_job,
    imagine_job,
    png,
    record,
    usage,
)

ALICE, BOB, CAROL, DAVE = 11, 22, 33, 44


@pytest.fixture
def engine(demo_engine) -> RecordingEngine:
    return RecordingEngine(demo_engine)


@pytest.fixture
async def make_dispatcher(engine, session_factory):
    created = []

    async def make(**limits) -> LocalDispatcher:
        settings = {"served_versions": (0,), "progress_interval_s": 0.0, **limits}
        dispatcher = LocalDispatcher(
            limits=DispatchLimits(**settings),
            models=ModelCache(lambda version: engine),
            session_factory=session_factory,
        )
        await dispatcher.start()
        created.append(dispatcher)
        return dispatcher

    yield make
    engine.release()
    for dispatcher in created:
        await dispatcher.close()


async def collect(handle) -> list:
    return [event async for event in handle.events()]


async def park(engine: RecordingEngine, dispatcher: LocalDispatcher, session_factory, user_id: int = DAVE):
    """Submit a job that sits in the engine until `engine.release()`, so later submissions queue up behind it."""
    engine.hold()
    blocker = imagine_job(user_id, steps=3)
    await record(session_factory, blocker)
    handle = await dispatcher.submit(blocker)
    await asyncio.to_thread(engine.entered.wait, 10)
    assert engine.entered.is_set(), "the blocking job never reached the engine"
    return handle


async def test_encode_happy_path(make_dispatcher, demo_engine):
    dispatcher = await make_dispatcher()
    image = png(7)
    handle = await dispatcher.submit(encode_job(ALICE, image))
    assert handle.position == 1
    events = await collect(handle)
    assert [type(e) for e in events] == [JobQueued, JobStarted, JobDone]
    payload = events[-1].payload
    assert isinstance(payload, EncodeResult)
    assert payload.codes == demo_engine.encode([load_image(image)])  # same code as calling the engine directly
    assert payload.codes[0].version == 0


async def test_imagine_happy_path_with_progress_and_usage_history(make_dispatcher, session_factory):
    dispatcher = await make_dispatcher()
    job = imagine_job(ALICE, count=2, steps=4)
    await record(session_factory, job)
    events = await collect(await dispatcher.submit(job))

    assert isinstance(events[0], JobQueued) and isinstance(events[1], JobStarted)
    progress = [e for e in events if isinstance(e, JobProgress)]
    assert [p.step for p in progress] == [1, 2, 3]  # the last step is followed by the result itself
    assert all(p.total == 4 for p in progress)
    preview = Image.open(io.BytesIO(progress[0].preview_png))
    assert preview.size == (8, 8)  # latent-resolution preview of a 64 px image, not a VAE decode

    done = events[-1]
    assert isinstance(done, JobDone) and isinstance(done.payload, ImagineResult)
    images = [Image.open(io.BytesIO(data)) for data in done.payload.images_png]
    assert [image.size for image in images] == [(64, 64), (64, 64)]
    assert done.payload.nsfw == [None, None]  # the demo model has no safety checker
    assert [m["seed"] for m in done.payload.metadata] == [1, 2]

    row = await usage(session_factory, job.job_id)
    assert row.status == "done"
    assert row.started_at is not None and row.finished_at is not None and row.started_at <= row.finished_at
    assert row.error is None


async def test_compatible_requests_share_one_generate_call(make_dispatcher, engine, session_factory):
    dispatcher = await make_dispatcher(max_batch_size=4)
    blocker = await park(engine, dispatcher, session_factory)
    jobs = [imagine_job(user, seed=10 * user, prompt=f"user {user}") for user in (ALICE, BOB, CAROL)]
    handles = []
    for job in jobs:
        await record(session_factory, job)
        handles.append(await dispatcher.submit(job))
    assert [h.position for h in handles] == [1, 2, 3]
    engine.release()
    results = [await h.result() for h in [blocker, *handles]]

    assert all(isinstance(r, JobDone) for r in results)
    assert [len(call) for call in engine.generate_calls] == [1, 3]  # the blocker, then one batch of three
    batch = engine.generate_calls[1]
    assert [(r.prompt, r.seed) for r in batch] == [(j.requests[0].prompt, j.requests[0].seed) for j in jobs]
    assert len({r.code_style for r in batch}) == 3  # each sample kept its own code
    for job, result in zip(jobs, results[1:], strict=True):  # and each job got its own image back
        assert result.payload.metadata[0]["seed"] == job.requests[0].seed
        assert (await usage(session_factory, job.job_id)).status == "done"


async def test_waiting_jobs_are_told_their_new_queue_position_as_the_queue_moves(
    make_dispatcher, engine, session_factory
):
    dispatcher = await make_dispatcher(max_batch_size=1)
    blocker = await park(engine, dispatcher, session_factory)
    jobs = [imagine_job(user, seed=user) for user in (ALICE, BOB, CAROL)]
    handles = []
    for job in jobs:
        await record(session_factory, job)
        handles.append(await dispatcher.submit(job))
    engine.release()
    await blocker.result()
    positions = [[e.position for e in await collect(handle) if isinstance(e, JobQueued)] for handle in handles]
    assert positions == [[1], [2, 1], [3, 2, 1]]


async def test_incompatible_requests_run_separately(make_dispatcher, engine, session_factory):
    dispatcher = await make_dispatcher(max_batch_size=4)
    blocker = await park(engine, dispatcher, session_factory)
    two_steps, three_steps, bigger = imagine_job(ALICE, steps=2), imagine_job(BOB, steps=3), imagine_job(CAROL, size=72)
    handles = []
    for job in (two_steps, three_steps, bigger):
        await record(session_factory, job)
        handles.append(await dispatcher.submit(job))
    encode_handles = [await dispatcher.submit(encode_job(user)) for user in (ALICE, BOB)]
    engine.release()
    for handle in [blocker, *handles, *encode_handles]:
        assert isinstance(await handle.result(), JobDone)
    assert sorted(len(call) for call in engine.generate_calls) == [1, 1, 1, 1]
    assert {call[0].batch_key() for call in engine.generate_calls[1:]} == {
        two_steps.requests[0].batch_key(),
        three_steps.requests[0].batch_key(),
        bigger.requests[0].batch_key(),
    }
    assert engine.encode_calls == [2]  # the two encode jobs were batched together


async def test_batches_are_filled_round_robin_across_users(make_dispatcher, engine, session_factory):
    dispatcher = await make_dispatcher(max_batch_size=2)
    blocker = await park(engine, dispatcher, session_factory)
    order = [(ALICE, "a1"), (ALICE, "a2"), (BOB, "b1"), (BOB, "b2"), (CAROL, "c1")]
    handles = []
    for user, prompt in order:
        job = imagine_job(user, prompt=prompt)
        await record(session_factory, job)
        handles.append(await dispatcher.submit(job))
    engine.release()
    for handle in [blocker, *handles]:
        assert isinstance(await handle.result(), JobDone)
    batches = [[r.prompt.split()[0] for r in call] for call in engine.generate_calls[1:]]
    # First-come-first-served would give [a1 a2] [b1 b2] [c1]: Alice would take the whole first batch.
    assert batches == [["a1", "b1"], ["c1", "a2"], ["b2"]]


async def test_per_user_limit(make_dispatcher, engine, session_factory):
    dispatcher = await make_dispatcher(max_jobs_per_user=2)
    blocker = await park(engine, dispatcher, session_factory, user_id=ALICE)  # Alice's first job
    queued = imagine_job(ALICE)
    await record(session_factory, queued)
    second = await dispatcher.submit(queued)
    with pytest.raises(UserJobLimitError, match="You already have 2 jobs queued or running") as refused:
        await dispatcher.submit(imagine_job(ALICE))
    assert "wait for one to finish" in str(refused.value)
    bob = await dispatcher.submit(encode_job(BOB))  # other users are not affected
    engine.release()
    for handle in (blocker, second, bob):
        assert isinstance(await handle.result(), JobDone)
    again = imagine_job(ALICE)  # slots come back when jobs finish
    await record(session_factory, again)
    assert isinstance(await (await dispatcher.submit(again)).result(), JobDone)


async def test_queue_cap(make_dispatcher, engine, session_factory):
    dispatcher = await make_dispatcher(queue_cap=3)
    blocker = await park(engine, dispatcher, session_factory)
    handles = [await dispatcher.submit(encode_job(user)) for user in (ALICE, BOB)]
    with pytest.raises(QueueFullError, match=r"busy .*try again in a minute"):
        await dispatcher.submit(encode_job(CAROL))
    engine.release()
    for handle in (blocker, *handles):
        assert isinstance(await handle.result(), JobDone)
    assert isinstance(await (await dispatcher.submit(encode_job(CAROL))).result(), JobDone)


async def test_unserved_version_is_refused_at_submit(make_dispatcher, engine):
    dispatcher = await make_dispatcher()
    job = encode_job(ALICE)
    job.version = 1
    with pytest.raises(UnservedVersionError, match="version 1 are not served here"):
        await dispatcher.submit(job)
    assert dispatcher.active_jobs == 0
    assert engine.encode_calls == []


async def test_engine_failure_fails_the_batch_with_reason_and_keeps_serving(make_dispatcher, engine, session_factory):
    dispatcher = await make_dispatcher()
    engine.fail_with = RuntimeError("CUDA out of memory")
    job = imagine_job(ALICE)
    await record(session_factory, job)
    failed = await (await dispatcher.submit(job)).result()
    assert isinstance(failed, JobFailed)
    assert failed.code == JobFailed.ENGINE_ERROR
    assert "CUDA out of memory" in failed.reason
    row = await usage(session_factory, job.job_id)
    assert row.status == "failed" and "CUDA out of memory" in row.error and row.finished_at is not None

    engine.fail_with = None
    next_job = imagine_job(ALICE)
    await record(session_factory, next_job)
    assert isinstance(await (await dispatcher.submit(next_job)).result(), JobDone)
    assert dispatcher.active_jobs == 0


async def test_a_failing_job_does_not_fail_the_others_in_its_batch(make_dispatcher, engine, session_factory):
    dispatcher = await make_dispatcher()
    blocker = await park(engine, dispatcher, session_factory)
    poison, fine = imagine_job(ALICE, prompt="poison"), imagine_job(BOB, prompt="fine")
    engine.fail_on_prompt = "poison 0"
    handles = []
    for job in (poison, fine):
        await record(session_factory, job)
        handles.append(await dispatcher.submit(job))
    engine.release()
    assert isinstance(await blocker.result(), JobDone)
    failed, done = [await handle.result() for handle in handles]
    assert isinstance(failed, JobFailed) and "cannot paint 'poison 0'" in failed.reason
    assert isinstance(done, JobDone)
    # The batch of two failed, then each job ran alone: only the culprit failed.
    assert [[r.prompt for r in call] for call in engine.generate_calls[1:]] == [
        ["poison 0", "fine 0"],
        ["poison 0"],
        ["fine 0"],
    ]
    assert (await usage(session_factory, poison.job_id)).status == "failed"
    assert (await usage(session_factory, fine.job_id)).status == "done"


async def test_unreadable_image_fails_only_its_own_job(make_dispatcher, engine):
    dispatcher = await make_dispatcher()
    engine.hold()
    blocker = await dispatcher.submit(encode_job(DAVE))
    await asyncio.to_thread(engine.entered.wait, 10)
    bad = await dispatcher.submit(encode_job(ALICE, b"this is not an image"))
    good = await dispatcher.submit(encode_job(BOB))
    engine.release()
    assert isinstance(await blocker.result(), JobDone)
    failed, done = await bad.result(), await good.result()
    assert isinstance(failed, JobFailed) and failed.code == JobFailed.BAD_INPUT
    assert "not an image" in failed.reason
    assert isinstance(done, JobDone) and len(done.payload.codes) == 1
    assert engine.encode_calls == [1, 1]  # the bad image never reached the engine


async def test_late_listener_still_gets_every_event(make_dispatcher, session_factory):
    dispatcher = await make_dispatcher()
    job = imagine_job(ALICE, steps=3)
    await record(session_factory, job)
    handle = await dispatcher.submit(job)
    again = await dispatcher.resume(job.job_id)  # a second listener on the same job
    first, second = await asyncio.gather(collect(handle), collect(again))
    assert [type(e) for e in first] == [type(e) for e in second]
    assert isinstance(first[-1], JobDone)
    assert await dispatcher.resume(job.job_id) is None  # finished jobs are released


async def test_preview_job_renders_the_grid_and_stores_it_in_the_registry(make_dispatcher, session_factory):
    from registry.styles import create_style, get_revision_preview
    from stylecodes.codec import random_code

    code = random_code(0)
    async with session_factory() as session:
        revision = await create_style(session, name="neon-noir", code=code, owner_id=ALICE, guild_id=None)
    dispatcher = await make_dispatcher()
    job = PreviewJob(new_job_id(), ALICE, revision.id, code.canonical, steps=2, size=64)
    events = await collect(await dispatcher.submit(job))
    progress = [e for e in events if isinstance(e, JobProgress)]
    assert progress and all(p.preview_png is None for p in progress)  # nobody watches these step by step
    done = events[-1]
    assert isinstance(done, JobDone) and isinstance(done.payload, PreviewResult)
    grid = Image.open(io.BytesIO(done.payload.grid_webp))
    assert grid.format == "WEBP" and grid.size == (128, 128)  # 2x2 tiles of 64 px
    async with session_factory() as session:
        assert await get_revision_preview(session, revision.id) == done.payload.grid_webp


async def test_a_preview_does_not_take_one_of_the_users_job_slots_but_counts_toward_the_cap(
    make_dispatcher, engine, session_factory
):
    """Saving a style while an /imagine runs must not refuse the user's next /imagine."""
    from registry.styles import create_style
    from stylecodes.codec import random_code

    code = random_code(0)
    async with session_factory() as session:
        revision = await create_style(session, name="neon-noir", code=code, owner_id=ALICE, guild_id=None)
    dispatcher = await make_dispatcher(max_jobs_per_user=2, queue_cap=4)
    running = await park(engine, dispatcher, session_factory, user_id=ALICE)  # Alice's /imagine
    preview = await dispatcher.submit(PreviewJob(new_job_id(), ALICE, revision.id, code.canonical, steps=2, size=64))
    second = imagine_job(ALICE)
    await record(session_factory, second)
    handles = [running, preview, await dispatcher.submit(second)]  # her second job
    with pytest.raises(UserJobLimitError, match="You already have 2 jobs"):
        await dispatcher.submit(imagine_job(ALICE))
    handles.append(await dispatcher.submit(encode_job(BOB)))
    with pytest.raises(QueueFullError):  # the preview holds one of the four places
        await dispatcher.submit(encode_job(CAROL))
    engine.release()
    for handle in handles:
        assert isinstance(await handle.result(), JobDone)
    assert dispatcher.active_jobs == 0

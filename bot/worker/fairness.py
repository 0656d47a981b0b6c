"""Waiting jobs per user, and batches filled round robin across users.

A batch holds jobs with one `batch_key` (same kind, model version, steps, guidance and size) and at most
`max_samples` samples. The user whose turn it is picks the key with their oldest job; then every user
with a compatible job adds one per pass, in turn order, until the batch is full. Users who got a job
in move to the back of the turn order, so a user with many jobs cannot starve the others.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from bot.jobs import Job, batch_key, job_size


class FairQueue:
    def __init__(self) -> None:
        self._by_user: OrderedDict[int, deque[Job]] = OrderedDict()  # turn order: first = next to pick

    def push(self, job: Job) -> None:
        self._by_user.setdefault(job.user_id, deque()).append(job)

    def __len__(self) -> int:
        return sum(len(jobs) for jobs in self._by_user.values())

    def jobs(self) -> list[Job]:
        return [job for jobs in self._by_user.values() for job in jobs]

    def pop_batch(self, max_samples: int) -> list[Job]:
        """The next batch (empty when nothing waits). A lone job larger than `max_samples` runs alone."""
        if not self._by_user:
            return []
        lead_user = next(iter(self._by_user))
        key = batch_key(self._by_user[lead_user][0])
        batch: list[Job] = []
        samples = 0
        taken: set[int] = set()
        served: list[int] = []
        added = True
        while added:
            added = False
            for user_id, jobs in self._by_user.items():
                job = next((j for j in jobs if id(j) not in taken and batch_key(j) == key), None)
                if job is None or (batch and samples + job_size(job) > max_samples):
                    continue
                batch.append(job)
                taken.add(id(job))
                samples += job_size(job)
                if user_id not in served:
                    served.append(user_id)
                added = True
        for job in batch:
            self._by_user[job.user_id].remove(job)
        for user_id in served:
            if self._by_user[user_id]:
                self._by_user.move_to_end(user_id)
            else:
                del self._by_user[user_id]
        return batch

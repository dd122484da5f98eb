"""The single-worker FIFO job queue (modules/service/queue.py)."""

import threading

import pytest

from modules.service.queue import DuplicateJob, JobCancelled, JobQueue, QueueFull

WAIT = 10  # seconds: every wait is bounded so a bug cannot hang the suite


class Blocker:
    """A job's work that signals when it starts and then waits to be released."""

    def __init__(self):
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, job):
        self.started.set()
        assert self.release.wait(WAIT), "blocker was never released"
        return "blocker"


@pytest.fixture
def blocker():
    work = Blocker()
    yield work
    work.release.set()  # never leave the worker stuck, whatever the test did


def start_blocked(queue, blocker):
    job = queue.submit("block", blocker)
    assert blocker.started.wait(WAIT)
    return job


def test_jobs_run_one_at_a_time_in_submission_order(blocker):
    queue = JobQueue()
    order, active, overlaps = [], [0], []
    guard = threading.Lock()

    def recorder(name):
        def work(job):
            with guard:
                active[0] += 1
                if active[0] > 1:
                    overlaps.append(name)
            threading.Event().wait(0.01)  # give a second worker a chance to overlap
            with guard:
                order.append(name)
                active[0] -= 1
            return name
        return work

    first = start_blocked(queue, blocker)
    names = [f"job{i}" for i in range(6)]
    jobs = [queue.submit("test", recorder(name)) for name in names]
    assert order == []  # nothing ran past the blocker
    blocker.release.set()
    assert [job.result(timeout=WAIT) for job in jobs] == names
    assert first.result(timeout=WAIT) == "blocker"
    assert order == names
    assert overlaps == []
    assert [job.number for job in [first, *jobs]] == sorted(job.number for job in [first, *jobs])
    assert all(job.state == "done" for job in jobs)


def test_position_counts_running_job_and_waiting_jobs(blocker):
    queue = JobQueue()
    running = start_blocked(queue, blocker)
    second = queue.submit("test", lambda job: 2)
    third = queue.submit("test", lambda job: 3)
    assert queue.position(second) == (2, 3)
    assert queue.position(third) == (3, 3)
    assert queue.position(running) == (0, 3)
    assert queue.running is running
    assert queue.waiting() == [second, third]
    blocker.release.set()
    assert third.result(timeout=WAIT) == 3
    assert second.finished and third.finished
    assert queue.position(second) == (0, 0)
    assert queue.position(third) == (0, 0)


def test_queue_limit_counts_waiting_jobs_and_is_read_at_each_submit(blocker):
    limit = [2]
    queue = JobQueue(limit=lambda: limit[0])
    start_blocked(queue, blocker)  # running: does not count against the cap
    waiting = [queue.submit("test", lambda job: 1), queue.submit("test", lambda job: 2)]
    with pytest.raises(QueueFull) as caught:
        queue.submit("test", lambda job: 3)
    assert "queue_limit" in str(caught.value)
    assert caught.value.limit == 2
    assert queue.waiting() == waiting  # the refused job was not added
    limit[0] = 3
    third = queue.submit("test", lambda job: 3)
    with pytest.raises(QueueFull):
        queue.submit("test", lambda job: 4)
    limit[0] = 1
    with pytest.raises(QueueFull) as caught:
        queue.submit("test", lambda job: 5)
    assert caught.value.limit == 1
    blocker.release.set()
    assert [job.result(timeout=WAIT) for job in [*waiting, third]] == [1, 2, 3]


def test_cancel_removes_a_waiting_job(blocker):
    queue = JobQueue()
    ran = []
    running = start_blocked(queue, blocker)
    before = queue.submit("test", lambda job: ran.append("before"))
    doomed = queue.submit("test", lambda job: ran.append("doomed"))
    after = queue.submit("test", lambda job: ran.append("after"))
    assert queue.cancel(doomed.id) is True
    assert queue.cancel(doomed.id) is False  # already gone
    assert queue.cancel(running.id) is False  # a running job is interrupted, not cancelled
    assert queue.cancel("no-such-job") is False
    assert queue.waiting() == [before, after]
    assert queue.position(after) == (3, 3)
    with pytest.raises(JobCancelled):
        doomed.result(timeout=WAIT)
    assert doomed.state == "cancelled"
    blocker.release.set()
    after.result(timeout=WAIT)
    assert running.result(timeout=WAIT) == "blocker"
    assert ran == ["before", "after"]
    assert doomed.started_at is None


def test_a_failing_job_raises_in_the_caller_and_the_worker_goes_on():
    queue = JobQueue()
    error = ValueError("boom")

    def fail(job):
        raise error

    failing = queue.submit("test", fail)
    following = queue.submit("test", lambda job: "still serving")
    with pytest.raises(ValueError) as caught:
        failing.result(timeout=WAIT)
    assert caught.value is error
    assert failing.state == "failed" and failing.error is error
    assert following.result(timeout=WAIT) == "still serving"
    assert following.state == "done" and following.error is None


def test_result_times_out_while_the_job_waits(blocker):
    queue = JobQueue()
    start_blocked(queue, blocker)
    waiting = queue.submit("test", lambda job: 1)
    with pytest.raises(TimeoutError):
        waiting.result(timeout=0.05)
    blocker.release.set()
    assert waiting.result(timeout=WAIT) == 1


def _call_in_thread(function):
    box = {}

    def target():
        try:
            box["value"] = function()
        except BaseException as error:  # noqa: BLE001 - reported to the test
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive(), "run() did not return"
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_run_from_inside_a_job_runs_inline():
    queue = JobQueue()
    seen = {}

    def inner(job):
        seen["inner_thread"] = threading.current_thread()
        seen["inner_job"] = job
        return 42

    def outer(job):
        seen["outer_thread"] = threading.current_thread()
        seen["outer_job"] = job
        return queue.run("inner", inner) + 1

    assert _call_in_thread(lambda: queue.run("outer", outer)) == 43
    assert seen["inner_thread"] is seen["outer_thread"]
    assert seen["inner_thread"] is not threading.current_thread()
    assert seen["inner_job"] is not seen["outer_job"] and seen["inner_job"].kind == "inner"
    assert [job.kind for job in queue.finished()] == ["outer"]  # the inner job was never queued


def test_run_from_outside_waits_and_reraises():
    queue = JobQueue()
    assert _call_in_thread(lambda: queue.run("test", lambda job: job.kind * 2)) == "testtest"

    def fail(job):
        raise RuntimeError("nope")

    with pytest.raises(RuntimeError, match="nope"):
        _call_in_thread(lambda: queue.run("test", fail))


def test_duplicate_job_id_find_and_finished_order(blocker):
    queue = JobQueue()
    running = start_blocked(queue, blocker)
    named = queue.submit("test", lambda job: "x", job_id="x")
    assert named.id == "x"
    with pytest.raises(DuplicateJob):
        queue.submit("test", lambda job: "again", job_id="x")
    with pytest.raises(DuplicateJob):
        queue.submit("test", lambda job: "again", job_id=running.id)
    assert queue.find("x") is named
    assert queue.find(running.id) is running
    assert queue.find("missing") is None
    others = [queue.submit("test", lambda job, i=i: i) for i in range(3)]
    assert queue.finished() == []
    blocker.release.set()
    assert others[-1].result(timeout=WAIT) == 2
    history = queue.finished()
    assert [job.id for job in history] == [job.id for job in (running, named, *others)]
    assert all(job.outcome is None and job.work is None and job.finished for job in history)  # records keep no pictures
    assert others[-1].result() == 2  # the caller's job still has its outcome
    assert queue.find("x").id == "x" and queue.find("x").state == "done"  # still found once finished
    again = queue.submit("test", lambda job: "second x", job_id="x")  # finished ids may be reused
    assert again.result(timeout=WAIT) == "second x"
    assert queue.finished()[-1].id == again.id and queue.find("x").number == again.number

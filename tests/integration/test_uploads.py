"""POST /v1/uploads on the real deployment: a phone photo with GPS becomes `ready` through the
upload tier, its renditions come through the edge without it, and the post reaches a
follower's timeline; bad input is refused before anything is stored; a re-upload is the same
post; the quota answers 429; a job whose worker never took it is swept up."""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from core import cache, cpucap
from core.db import connect
from core.settings import DEV_API_KEY
from media import ids, samples
from media.blobs import BlobStore, digest_of
from media.images import probe
from serving import uploads
from tests.waiting import wait_until

pytestmark = pytest.mark.integration
API = {"X-API-Key": DEV_API_KEY}
PIL_FORMAT = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF"}


def _post(service: str, data: bytes, author: int, name: str = "photo.jpg", **kw) -> httpx.Response:
    files = {"file": (name, data, "application/octet-stream")}
    return httpx.post(
        f"{service}/v1/uploads",
        headers=kw.pop("headers", API),
        files=files,
        data={"author_id": str(author), "topic": "3", **kw},
        timeout=30,
    )


def _author_with_followers(settings, world) -> tuple[int, int]:
    counts = world.follows.groupby("followee_id").size()
    author = int(counts[counts <= settings.pull_follower_threshold].idxmax())
    follower = int(world.follows.loc[world.follows["followee_id"] == author, "user_id"].iloc[0])
    return author, follower


def _ready(service: str, post_id: int, timeout_s: float = 90) -> dict:
    def done():
        r = httpx.get(f"{service}/v1/uploads/{post_id}", headers=API, timeout=10)
        return r.json() if r.status_code == 200 and r.json()["status"] != "processing" else None

    return wait_until(done, timeout=timeout_s, interval=0.5, what=f"upload {post_id} processed")


def test_a_phone_photo_becomes_ready_and_reaches_a_follower(service, settings, world):
    author, follower = _author_with_followers(settings, world)
    sent = samples.as_phone_sends_it(samples.photos()[2], orientation=6)
    r = _post(service, sent, author)
    assert r.status_code == 202, r.text
    body = r.json()
    post_id = body["post_id"]
    assert ids.is_upload_id(post_id) and body["post_id_str"] == str(post_id)
    assert body["status_url"] == f"/v1/uploads/{post_id}" and body["duplicate"] is False

    done = _ready(service, post_id)
    assert done["status"] == "ready", done
    assert done["placeholder"].startswith("data:image/webp;base64,")
    seen = {(x["variant"], x["format"]) for x in done["renditions"]}
    assert seen == {(f"w{w}", f) for w in (320, 150) for f in ("jpeg", "webp", "avif")}
    for x in done["renditions"]:
        got = httpx.get(x["url"], timeout=10)  # through the edge
        assert got.status_code == 200 and len(got.content) == x["bytes"]
        assert f"/media/r/{hashlib.sha256(got.content).hexdigest()}." in x["url"]
        with Image.open(io.BytesIO(got.content)) as im:
            assert im.format == PIL_FORMAT[x["format"]]
            assert im.size == (x["width"], x["height"]) and im.height > im.width  # upright
            assert len(im.getexif()) == 0
        assert samples.CAMERA_MODEL.encode() not in got.content

    cluster, session = connect(settings)
    try:  # the post is stored and fanned out only now that its renditions are
        row = session.execute(
            "SELECT author_id FROM posts_by_id WHERE post_id = %s", (post_id,)
        ).one()
        assert row is not None and row.author_id == author

        def in_timeline() -> bool:
            rows = session.execute(
                "SELECT post_id FROM feed_by_user WHERE user_id = %s", (follower,)
            )
            return post_id in {x.post_id for x in rows}

        wait_until(in_timeline, timeout=30, what="the upload in the follower's timeline")
    finally:
        cluster.shutdown()

    # the follower's feed draws it from the stored renditions: scroll the session to it
    stored = {(x["variant"], x["format"]): x["url"] for x in done["renditions"]}
    cursor, item = None, None
    for _ in range(20):
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = httpx.get(f"{service}/v1/feed/{follower}", headers=API, params=params, timeout=30)
        assert page.status_code == 200, page.text
        found = [i for i in page.json()["items"] if i["post_id"] == post_id]
        cursor = page.json()["next_cursor"]
        if found or not cursor:
            item = found[0] if found else None
            break
    assert item is not None, "the upload never showed in the follower's ranked session"
    assert item["media_kind"] == "photo"
    assert {(r["variant"], r["format"]): r["url"] for r in item["renditions"]} == stored
    assert [r["format"] for r in item["renditions"][:3]] == ["avif", "webp", "jpeg"]

    again = _post(service, sent, author)  # the same author, the same bytes: the same post
    assert again.status_code == 202 and again.json()["post_id"] == post_id
    assert again.json()["duplicate"] is True and again.json()["status"] == "ready"
    other = _author_with_followers(settings, world)[1]  # another author, the same bytes
    assert _post(service, sent, other).json()["post_id"] != post_id


def _count_blobs(settings) -> int:
    return sum(1 for _ in BlobStore(settings.blob_store_url).fs.find(settings.blob_store_url))


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"GIF89a" + b"\0" * 200, 415, "unsupported_type"),
        (b"not an image at all", 415, "unsupported_type"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 100, 400, "undecodable"),
    ],
)
def test_bad_input_is_refused_naming_it_and_nothing_is_stored(
    service, settings, world, data, status, code
):
    author, _ = _author_with_followers(settings, world)
    before = _count_blobs(settings)
    r = _post(service, data, author)
    assert r.status_code == status, r.text
    assert code in r.json()["detail"]
    assert _count_blobs(settings) == before


def test_a_bomb_and_an_unknown_author_are_refused(service, settings, world):
    from tests.unit.test_media_images import _png_header_claiming

    author, _ = _author_with_followers(settings, world)
    r = _post(service, _png_header_claiming(20_000, 20_000), author, name="bomb.png")
    assert r.status_code == 413 and "too_many_pixels" in r.json()["detail"]
    r = _post(service, samples.crop(samples.photos()[0], 1.0, 0.3), 987_654_321)
    assert r.status_code == 404 and "987654321" in r.json()["detail"]
    r = _post(service, samples.crop(samples.photos()[0], 1.0, 0.3), author, topic="x")
    assert r.status_code == 422
    assert httpx.get(f"{service}/v1/uploads/12345", headers=API, timeout=10).status_code == 404


def test_the_quota_answers_429_with_retry_after(service, settings, world):
    from serving.security import ApiKeys

    author, _ = _author_with_followers(settings, world)
    key_id = ApiKeys(settings.api_key_hashes).identify(DEV_API_KEY)
    hour = int(time.time() // 3600)
    key = f"feedcast:{settings.feast_project}:upload-quota:{key_id}:{hour}"
    r = cache.client(settings)
    r.set(key, settings.upload_quota_per_hour, ex=3600)  # the hour's quota already used
    try:
        resp = _post(service, samples.crop(samples.photos()[0], 1.0, 0.4), author)
        assert resp.status_code == 429, resp.text
        assert 0 < int(resp.headers["Retry-After"]) <= 3600
        assert "quota" in resp.json()["detail"]
    finally:
        r.delete(key)


def test_the_blob_store_unavailable_is_a_503_and_nothing_is_half_written(service, settings, world):
    """The store's folder replaced by a file (every write fails, even as root): a 503 with
    Retry-After, no claim of the bytes and no job; once the store is back the same upload is
    accepted as a first upload, not a duplicate of a half-written one."""
    author, _ = _author_with_followers(settings, world)
    data = samples.crop(samples.photos()[2], 3 / 4, 0.7)
    root = Path(settings.blob_store_url)
    aside = root.with_name(root.name + ".aside")
    root.mkdir(parents=True, exist_ok=True)  # this test may be the first to store anything
    root.rename(aside)
    root.write_bytes(b"")
    try:
        r = _post(service, data, author)
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] and "not stored" in r.json()["detail"]
    finally:
        root.unlink()
        aside.rename(root)
    cluster, session = connect(settings)
    try:
        claim = session.execute(
            "SELECT post_id FROM uploads_by_content WHERE author_id = %s AND sha256 = %s",
            (author, digest_of(data)),
        ).one()
        assert claim is None
    finally:
        cluster.shutdown()
    again = _post(service, data, author)
    assert again.status_code == 202 and again.json()["duplicate"] is False
    assert _ready(service, again.json()["post_id"])["status"] == "ready"


def _record(settings, session, author: int, data: bytes, lease_s: float):
    """A job recorded by hand as the ingress would (the original stored, the content claimed),
    with a lease of ``lease_s`` (negative: run out at once); its id, original and tables."""
    original = BlobStore(settings.blob_store_url).put(data)
    post_id = ids.IdMaker(shard=ids.SHARDS - 1).next()
    jobs = uploads.Jobs(session, 5.0)
    assert jobs.claim_content(author, digest_of(data), post_id) == (post_id, True)
    p = probe(data, max_bytes=settings.upload_max_bytes, max_pixels=settings.upload_max_pixels)
    jobs.record(post_id, author, 1, original, p, lease_s=lease_s)
    return post_id, original, jobs


def test_a_job_no_worker_took_is_swept_up(service, settings, world):
    """A job recorded with its lease already run out and never handed to a worker (as if the
    ingress died right after the 202): a worker's sweeper takes it and it ends ready."""
    author, _ = _author_with_followers(settings, world)
    data = samples.crop(samples.photos()[1], 4 / 5, 0.6)
    cluster, session = connect(settings)
    try:
        post_id, _, jobs = _record(settings, session, author, data, lease_s=-1)  # run out
        assert post_id in jobs.pending()
        done = _ready(service, post_id, timeout_s=settings.upload_sweep_s * 6 + 30)
        assert done["status"] == "ready" and done["renditions"]
        assert post_id not in jobs.pending()
    finally:
        cluster.shutdown()


def test_a_finished_jobs_row_left_in_another_bucket_is_swept_off(service, settings, world):
    """A row of the sweeper's list that outlived its job (its removal failed, or an older build
    wrote it to bucket ``post_id % 8``) is removed by the next sweep, not read every 10 s for
    ever."""
    author, _ = _author_with_followers(settings, world)
    data = samples.crop(samples.photos()[2], 3 / 4, 0.55)
    cluster, session = connect(settings)
    try:
        post_id, _, jobs = _record(settings, session, author, data, lease_s=-1)
        done = _ready(service, post_id, timeout_s=settings.upload_sweep_s * 6 + 30)
        assert done["status"] == "ready"
        stray = (uploads.pending_bucket(post_id) + 1) % uploads.PENDING_BUCKETS
        session.execute(
            "INSERT INTO uploads_pending (bucket, post_id) VALUES (%s, %s)", (stray, post_id)
        )
        assert (stray, post_id) in jobs.pending_rows()
        wait_until(
            lambda: (stray, post_id) not in jobs.pending_rows(),
            timeout=settings.upload_sweep_s * 4 + 10,
            interval=1.0,
            what=f"the sweeper to take {post_id}'s stray row off its list",
        )
        assert post_id not in jobs.pending()
        assert _ready(service, post_id)["status"] == "ready"  # and the job is as it was
    finally:
        cluster.shutdown()


RENDER_NAME = uploads.RENDER_NAME


def _render_processes(parent: int) -> list[int]:
    """The render processes an upload worker started (``serving.uploads.RenderProcess``)."""
    out = []
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or (proc / "comm").read_text().strip() != RENDER_NAME:
                continue
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                out.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return out


def _capped_together(settings, ray_session: str, workers: list[int]) -> None:
    """The tier's API and workers, and each worker's renderer, in one cgroup whose quota is
    ``upload_cpu_fraction`` of the cores (where this machine lets a process make one)."""
    from stack import ray_head

    tier = ray_head.replica_pids(ray_session, "feedcast-uploads:")
    kids = [k for pid in workers for k in _render_processes(pid)]
    assert kids and set(workers) <= set(tier)
    group = cpucap.group_name(settings.ray_port)
    if not os.access(cpucap.ROOT, os.W_OK):  # no cap here, and the tier says so
        assert all(cpucap.of_process(p) == cpucap.of_process() for p in tier + kids)
        return
    assert {cpucap.of_process(p) for p in tier + kids} == {f"/{group}"}
    quota = int((cpucap.ROOT / group / "cpu.cfs_quota_us").read_text())
    cores = cpucap.cores_for(settings.upload_cpu_fraction)
    assert quota == round(cores * cpucap.PERIOD_US) and quota > 0
    assert "nr_throttled" in cpucap.throttled(group)


def test_a_worker_killed_mid_job_still_ends_ready_with_one_set(service, settings, world):
    """SIGKILL every upload worker while one holds a job: Ray Serve replaces the worker, the
    job's lease runs out, a sweeper takes it again, and it ends ready with one set of
    renditions. The upload tier (its API and its workers) runs nicer than the feed (and under
    SCHED_IDLE where set), in every thread."""
    import signal

    import ray

    from serving import startup
    from stack import ray_head

    author, _ = _author_with_followers(settings, world)
    ray_session = ray._private.worker._global_node.get_session_dir_path()
    cluster, session = connect(settings)
    try:
        jobs = uploads.Jobs(session, 5.0)
        for attempt in range(5):  # until a kill lands while the job is in a worker's hands
            workers = wait_until(
                lambda: ray_head.replica_pids(ray_session, "feedcast-uploads:UploadWorker"),
                timeout=120,
                what="an upload worker running",
            )
            # The tier's API replicas as well as its workers: every thread of the upload app.
            for pid in ray_head.replica_pids(ray_session, "feedcast-uploads:"):
                assert set(startup.nice_of_threads(pid)) == {settings.upload_nice}, pid
                policy = os.SCHED_IDLE if settings.upload_sched_idle else os.SCHED_OTHER
                assert set(startup.policy_of_threads(pid)) == {policy}, pid
            if attempt == 0 and Path("/proc/self/autogroup").exists():
                for pid in workers:  # each renders in a nicer scheduling group of its own
                    kids = wait_until(
                        lambda pid=pid: _render_processes(pid), timeout=60, what="a renderer"
                    )
                    mine = Path(f"/proc/{pid}/autogroup").read_text().strip()
                    for kid in kids:
                        group = Path(f"/proc/{kid}/autogroup").read_text().strip()
                        assert group != mine and group.endswith(f" nice {settings.upload_nice}")
                _capped_together(settings, ray_session, workers)
            data = samples.crop(samples.photos()[attempt % 3], 1.0, 1.0 - 0.07 * attempt)
            r = _post(service, data, author)
            assert r.status_code == 202, r.text
            post_id = r.json()["post_id"]
            job = wait_until(
                lambda pid=post_id: (
                    (j := jobs.get(pid)) and (j.attempts >= 1 or j.status != "processing") and j
                ),
                timeout=60,
                interval=0.01,
                what="the job taken by a worker",
            )
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            job = jobs.get(post_id)
            if job is not None and job.status == "processing":
                break
        else:
            pytest.fail("each job was done before its worker could be killed")
        done = _ready(service, post_id, timeout_s=settings.upload_lease_s + 120)
        assert done["status"] == "ready", done
        assert jobs.get(post_id).attempts >= 2  # taken again after the kill
        rows = session.execute(
            "SELECT variant, format FROM renditions_by_post WHERE post_id = %s", (post_id,)
        ).all()
        assert len(rows) == len(done["renditions"]) == len({(x.variant, x.format) for x in rows})
        assert len(rows) % 3 == 0 and rows  # each width in each of the three formats
    finally:
        cluster.shutdown()


def test_the_cli_uploads_and_prints_the_renditions(service, settings, world, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app

    author, _ = _author_with_followers(settings, world)
    monkeypatch.setenv("FEEDCAST_SERVE_PORT", str(settings.serve_port))
    photo = tmp_path / "portrait.jpg"
    photo.write_bytes(samples.crop(samples.photos()[2], 4 / 5, 0.7))
    r = CliRunner().invoke(app, ["upload", str(photo), "--author", str(author), "--wait", "90"])
    assert r.exit_code == 0, r.output
    assert "processing" in r.output  # the 202
    for word in ("w150", "avif", "webp", "jpeg"):  # ~240 px wide: w150 only, never upscaled
        assert word in r.output, r.output
    assert "w320" not in r.output
    assert "".join(r.output.split()).count("/media/r/") == 3  # full URLs, folded not cut

"""The upload tier renders in a process of its own (``serving.uploads.RenderProcess``): the same
renditions as in-process, a refused photo's error across the boundary, and a dead process
replaced on the next job."""

import os
import signal
from concurrent.futures.process import BrokenProcessPool

import pytest

from media import samples
from media.images import MediaError
from serving import uploads


@pytest.fixture(scope="module")
def renderer():
    r = uploads.RenderProcess(5)
    yield r
    r.close()


def _photo() -> bytes:
    return samples.crop(samples.photos()[0], 1.0, 0.5)


def test_the_same_renditions_as_in_process(renderer):
    data = _photo()
    there, there_ph = renderer.render("pillow", data, 0.95)
    here, here_ph = uploads.render("pillow", data, 0.95)
    assert [(r.variant, r.format, r.width, r.height, r.quality) for r in there] == [
        (r.variant, r.format, r.width, r.height, r.quality) for r in here
    ]
    assert [r.data for r in there] == [r.data for r in here] and there_ph == here_ph


def test_a_photo_that_does_not_decode_comes_back_as_its_media_error(renderer):
    data = _photo()
    with pytest.raises(MediaError) as err:
        renderer.render("pillow", data[: len(data) // 3], 0.95)
    assert err.value.code == "undecodable"


def test_a_killed_render_process_fails_its_job_and_the_next_job_gets_a_new_one(renderer):
    first = renderer._executor().submit(os.getpid).result()
    os.kill(first, signal.SIGKILL)
    with pytest.raises(BrokenProcessPool):
        renderer.render("pillow", _photo(), 0.95)
    rendered, _ = renderer.render("pillow", _photo(), 0.95)
    assert rendered
    assert renderer._executor().submit(os.getpid).result() != first

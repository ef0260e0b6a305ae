"""A starting replica runs at a lower CPU priority and takes its own back when ready."""

import os
import subprocess
import sys
import textwrap

from serving import startup

SCRIPT = textwrap.dedent(
    """
    import json, os, threading
    from serving import startup
    base = os.getpriority(os.PRIO_PROCESS, 0)
    startup.lower_priority()
    # a thread started during the start (torch's pool, the driver's) inherits the lower priority
    t = threading.Thread(target=threading.Event().wait, args=(30,), daemon=True)
    t.start()
    during = startup.nice_of_threads(os.getpid())
    changed = startup.restore_priority()
    after = startup.nice_of_threads(os.getpid())
    print(json.dumps({"base": base, "during": during, "after": after, "changed": changed,
                      "may": startup.can_restore(base)}))
    """
)


def run(env: dict[str, str]) -> dict:
    import json

    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)


def test_start_is_lowered_then_every_thread_restored():
    got = run({startup.ENV: "7"})
    assert len(got["during"]) >= 2 and len(got["after"]) == len(got["during"])
    if got["may"]:  # root or RLIMIT_NICE: the start yields, and all of it comes back
        assert set(got["during"]) == {min(got["base"] + 7, 19)}
        assert set(got["after"]) == {got["base"]} and got["changed"] == len(got["during"])
    else:  # no right to come back: the start is not slowed at all
        assert set(got["during"]) == {got["base"]} and got["changed"] == 0


def test_zero_or_unset_leaves_priority_alone():
    for env in ({startup.ENV: "0"}, {}):
        got = run(env)
        assert set(got["during"]) == {got["base"]} == set(got["after"]) and got["changed"] == 0


def test_restore_without_a_lowered_start_changes_nothing():
    assert startup.restore_priority() == 0


def test_own_session_puts_a_pool_process_in_a_nicer_scheduling_group_of_its_own():
    """The upload tier renders in such a process: its own autogroup (a new session) at the
    given nice, where the caller's autogroup is left as it was."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    mine = startup.autogroup()
    ctx = multiprocessing.get_context("spawn")
    own = {"initializer": startup.own_session, "initargs": (7,)}
    with ProcessPoolExecutor(1, mp_context=ctx, **own) as p:
        theirs = p.submit(startup.autogroup).result()
        nice = p.submit(os.getpriority, os.PRIO_PROCESS, 0).result()
    assert startup.autogroup() == mine  # the caller's group is untouched
    if mine == "no autogroup":  # a kernel without autogroups: the nice value still holds
        assert nice >= 7
        return
    assert theirs != mine and theirs.endswith("nice 7")
    assert nice == max(7, os.getpriority(os.PRIO_PROCESS, 0))


def test_a_process_in_its_own_group_ends_when_its_parent_is_killed():
    """Its own session puts it out of reach of a signal to its parent's group (``ray stop``, a
    killed worker): it must notice the parent is gone and end by itself."""
    import signal
    import time

    script = textwrap.dedent(
        """
        import multiprocessing, os, sys, time
        from concurrent.futures import ProcessPoolExecutor
        from serving import startup
        if __name__ == "__main__":
            pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=startup.own_group_of,
                                       initargs=(os.getpid(), 5, False, "test-render"))
            print(pool.submit(os.getpid).result(), flush=True)
            time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert os.getsid(child) != os.getsid(parent.pid)  # out of its parent's session
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and os.path.exists(f"/proc/{child}"):
            time.sleep(0.2)
        assert not os.path.exists(f"/proc/{child}"), "the child outlived its parent"
    finally:
        parent.kill()


STAY = textwrap.dedent(
    """
    import json, os
    from serving import startup
    base = os.getpriority(os.PRIO_PROCESS, 0)
    startup.stay_lower()
    print(json.dumps({"base": base, "now": startup.nice_of_threads(os.getpid()),
                      "remembered": startup.base_priority()}))
    """
)


def test_the_upload_tiers_hook_lowers_its_start_for_good_and_remembers_the_base():
    import json

    out = subprocess.run(
        [sys.executable, "-c", STAY],
        env={**os.environ, startup.ENV: "19"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    got = json.loads(out.stdout)
    assert set(got["now"]) == {19}  # no privilege needed to go down, and no way back asked
    assert got["remembered"] == got["base"]  # the tier's own nice is counted from here


def test_actor_options_carry_the_hook_only_with_a_step():
    hook = "serving.startup.stay_lower"
    assert startup.actor_options(0.1, hook, 0) == {"num_cpus": 0.1}
    env = startup.actor_options(0.1, hook, 19)["runtime_env"]["env_vars"]
    assert env[startup.ENV] == "19" and hook in env.values()

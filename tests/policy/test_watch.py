"""Tests of proxy/policy/watch.py: first load, change detection, atomic swap, invalid edits kept out and counted."""

import os

import pytest

from proxy.policy.watch import EMPTY, PolicyFileError, PolicyWatch

GOOD = "services:\n  web.test:80:\n    routes:\n      - {name: r, match: {method: GET}}\n"
OTHER = "services:\n  api.test:80: {}\n"


def _write(path, text, bump=0):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    if bump:  # make the change visible even on coarse mtime clocks
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump))


def test_no_path_is_an_empty_policy_that_never_changes():
    watch = PolicyWatch(None)
    assert watch.load() is EMPTY
    assert watch.poll() is False


def test_first_load_errors_name_the_file_and_field(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("services:\n  web.test:80:\n    routez: []\n")
    with pytest.raises(PolicyFileError, match=r"p\.yaml.*routez"):
        PolicyWatch(str(path)).load()
    with pytest.raises(PolicyFileError, match="missing.yaml"):
        PolicyWatch(str(tmp_path / "missing.yaml")).load()


def test_a_valid_edit_is_applied_once_and_subscribers_hear_of_it(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(GOOD)
    watch = PolicyWatch(str(path))
    first = watch.load()
    assert first.get("web.test:80") is not None
    heard = []
    watch.subscribe(heard.append)
    assert watch.poll() is False  # unchanged
    _write(path, OTHER, bump=1000)
    assert watch.poll() is True
    assert watch.poll() is False
    assert heard == [watch.current]
    assert watch.current.get("api.test:80") is not None and watch.current.get("web.test:80") is None
    assert (watch.reload_ok, watch.reload_invalid) == (1, 0)


def test_an_invalid_edit_keeps_the_last_good_policy_and_is_counted_once(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(GOOD)
    watch = PolicyWatch(str(path))
    good = watch.load()
    heard = []
    watch.subscribe(heard.append)
    _write(path, "services: [\n", bump=1000)
    assert watch.poll() is False
    assert watch.poll() is False  # the same bad file is reported once
    assert watch.current is good and heard == []
    assert watch.reload_invalid == 1
    _write(path, OTHER, bump=2000)
    assert watch.poll() is True
    assert heard == [watch.current]


def test_a_deleted_file_keeps_the_policy(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(GOOD)
    watch = PolicyWatch(str(path))
    good = watch.load()
    path.unlink()
    assert watch.poll() is False and watch.poll() is False
    assert watch.current is good and watch.reload_invalid == 1
    path.write_text(OTHER)
    assert watch.poll() is True


def test_a_failing_subscriber_does_not_stop_the_others(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(GOOD)
    watch = PolicyWatch(str(path))
    watch.load()
    heard = []

    def broken(_):
        raise RuntimeError("bug")

    watch.subscribe(broken)
    unsubscribe = watch.subscribe(heard.append)
    _write(path, OTHER, bump=1000)
    assert watch.poll() is True and len(heard) == 1
    unsubscribe()
    _write(path, GOOD, bump=2000)
    assert watch.poll() is True and len(heard) == 1


def test_render_counts_both_results(tmp_path):
    watch = PolicyWatch(None)
    out = []
    watch.render(out)
    assert 'policy_reload_total{result="ok"} 0' in out
    assert 'policy_reload_total{result="invalid"} 0' in out

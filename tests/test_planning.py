"""Pure decisions, no SSH: release numbers, rollback targets, cleanup, batches, env rendering,
ledger lines, notification payloads."""

import json
import urllib.request

import pytest

from deployer.config import envfile
from deployer.config.settings import EnvValue, Host, NotifySettings, SSHSettings
from deployer.errors import DeployerError, UsageError
from deployer.plan import releases as planning
from deployer.plan.batches import Strategy, batches
from deployer.plan.host_state import HostState, LockInfo, Release
from deployer.plan.options import Options
from deployer.remote.state import parse
from deployer.report import ledger, notify


def state(*releases, current=None, strays=()):
    return HostState(
        current_kind="link" if current else "absent",
        current_target=f"releases/{current}" if current else "",
        releases=tuple(releases),
        strays=tuple(strays),
    )


def rel(n, complete=True, bad=False, rolled=False, **meta):
    return Release(n, complete, bad, rolled, meta=meta)


def test_next_release_number_is_one_above_the_highest_anywhere():
    states = {
        "a": state(rel(1), rel(2), current=2),
        "b": state(rel(1), rel(5, complete=False), current=1),
        "c": state(),
    }
    assert planning.next_release_number(states) == 6
    assert planning.next_release_number({"a": state()}) == 1
    with pytest.raises(DeployerError, match="used up"):
        planning.next_release_number({"a": state(rel(10**9))})


def test_rollback_target_skips_incomplete_bad_and_rolled_back():
    st = state(rel(1), rel(2, bad=True), rel(3, complete=False), rel(4, rolled=True), rel(5), current=5)
    assert planning.rollback_target(st) == 1
    assert planning.rollback_target(st, to=4) == 4
    for to, why in ((2, "marked bad"), (3, "incomplete"), (9, "does not exist"), (5, "already current")):
        with pytest.raises(DeployerError, match=why):
            planning.rollback_target(st, to=to)
    with pytest.raises(DeployerError, match="no earlier complete release"):
        planning.rollback_target(state(rel(1), current=1))
    with pytest.raises(DeployerError, match="no current release"):
        planning.rollback_target(state(rel(1)))


def test_a_symlink_under_releases_is_never_a_rollback_target():
    st = parse("current\tlink releases/2\nrelease\t1 1 0 0 0\nrelease\t2 1 0 0 0\nlinked\t99\nlinked\tx\n")
    assert st.linked == ("99", "x") and st.current_problem() is None
    for to in ("99", "x"):
        with pytest.raises(DeployerError, match=f"releases/{to} is a symlink"):
            planning.rollback_target(st, to=to)
    assert planning.rollback_target(st) == 1
    pointed = parse("current\tlink releases/99\nrelease\t1 1 0 0 0\nlinked\t99\n", "/srv/app")
    assert "a symlink" in (pointed.current_problem() or "")


def test_cleanup_by_number_never_current_or_previous():
    st = state(*(rel(n) for n in range(1, 7)), current=5)
    # 6 is an orphan (newer than current, never switched): purged; keep 3 = 5, 4 (previous), 3
    assert sorted(planning.cleanup(st, 3, 5, 4), key=int) == ["1", "2", "6"]
    st = state(
        rel(1),
        rel(2, bad=True),
        rel(3, complete=False),
        rel(4),
        rel(5),
        rel(6),
        current=6,
        strays=(".tmp-7-abc", "junk"),
    )
    doomed = planning.cleanup(st, 3, 6, 5)
    assert set(doomed) == {".tmp-7-abc", "2", "3", "1"}
    # keep_releases=1 still keeps current and the release it replaced
    assert planning.cleanup(state(rel(1), rel(2), rel(3), current=3), 1, 3, 2) == ["1"]
    # a rolled-back release newer than current is not an orphan
    assert planning.cleanup(state(rel(1), rel(2, rolled=True), current=1), 5, 1, None) == []


def test_kept_artifacts_follow_surviving_releases():
    st = state(rel(1, artifact_sha256="aa"), rel(2, artifact_sha256="bb"), current=2)
    assert planning.kept_artifacts(st, ["1"], "cc") == ["bb", "cc"]


def test_link_source_is_the_newest_usable_release_of_the_same_artifact():
    st = state(
        rel(1, artifact_sha256="aa"),
        rel(2, artifact_sha256="aa"),
        rel(3, artifact_sha256="aa", bad=True),
        rel(4, complete=False, artifact_sha256="aa"),
        rel(5, artifact_sha256="bb"),
        current=5,
    )
    assert planning.link_source(st, "aa") == 2
    assert planning.link_source(st, "cc") is None


def test_uploads_are_extracted_as_they_arrive_only_on_slow_links():
    assert not planning.stream_upload(None)  # not measured: one after the other
    assert not planning.stream_upload(0.002)  # loopback, LAN, same region
    assert planning.stream_upload(planning.STREAM_RTT)
    assert planning.stream_upload(0.08)  # across the world


def test_batches_per_strategy():
    hosts = ["h1", "h2", "h3", "h4", "h5"]
    assert [b.hosts for b in batches(hosts, Strategy())] == [tuple(hosts)]
    rolling = batches(hosts, Strategy("rolling", batch=2, pause=1.5))
    assert [b.hosts for b in rolling] == [("h1", "h2"), ("h3", "h4"), ("h5",)]
    assert [b.pause_after for b in rolling] == [1.5, 1.5, 0.0]
    canary = batches(hosts, Strategy("canary", canary=1, bake=30))
    assert [b.hosts for b in canary] == [("h1",), ("h2", "h3", "h4", "h5")] and canary[0].bake == 30
    assert [b.label for b in canary] == ["canary", "rest"]


@pytest.mark.parametrize(
    "kind, kwargs, message",
    [
        (Strategy, {"name": "yolo"}, "--strategy"),
        (Strategy, {"batch": 0}, "--batch"),
        (Strategy, {"pause": -1}, "--pause"),
        (Strategy, {"bake": -1}, "--bake"),
        (Options, {"parallel": 0}, "--parallel"),
        (Options, {"max_fail": -1}, "--max-fail"),
        (Options, {"forced": True}, "--force needs --reason"),
        (Options, {"lock_wait": -1}, "--lock-wait"),
    ],
)
def test_bad_options_are_usage_errors(kind, kwargs, message):
    with pytest.raises(UsageError, match=message):
        kind(**kwargs)


def test_state_parse_reads_inspect_output():
    out = (
        "user\tdeploy\ndeploy_to\tpresent 1\ncurrent\tlink releases/2\n"
        'release\t1 1 0 0 1\t{"version": "v1"}\nrelease\t2 1 0 0 0\t{"version": "v2"}\n'
        "release\t3 0 0 0 0\t\nstray\t.tmp-4-x\n"
        'lock\t{"who": "a@b", "pid": 7, "stage": "prod", "started": "2026-01-01T00:00:00Z"}\n'
        "free_kb\t12345\nmissing_tools\t\ncached\t1\n"
    )
    st = parse(out)
    assert st.current == 2 and st.highest == 3 and st.cached and st.free_kb == 12345
    assert st.release(1).migrated and st.release(2).meta["version"] == "v2" and not st.release(3).complete
    assert st.lock.who == "a@b" and st.lock.pid == 7 and "pid 7" in st.lock.describe()
    assert parse("current\tdangling releases/9\n").current is None
    assert "dangling" in parse("current\tdangling releases/9\n").current_problem()
    assert LockInfo.parse("garbage").who == "?"


def test_env_render_quotes_and_round_trips():
    values = {
        "PLAIN": "abc-1.2:3",
        "SPACES": "a b",
        "QUOTE": 'say "hi"',
        "DOLLAR": "$HOME `x`",
        "NEWLINE": "a\nb",
        "EMPTY": "",
    }
    text = envfile.render(values).decode()
    assert "PLAIN=abc-1.2:3\n" in text and 'SPACES="a b"\n' in text and 'DOLLAR="\\$HOME \\`x\\`"' in text
    assert envfile.parse(text) == values


def test_env_resolution_and_diff(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKEN_X", "tok-123456")
    secret_file = tmp_path / "pw"
    secret_file.write_text("from-file\n")
    ssh = SSHSettings()
    web = Host(
        "web",
        "w",
        ssh,
        ("web",),
        env=(
            ("A", EnvValue("1")),
            ("T", EnvValue(secret="env:TOKEN_X")),
            ("F", EnvValue(secret=f"file:{secret_file}")),
            ("C", EnvValue(secret="cmd:echo from-cmd")),
        ),
    )
    envs = envfile.resolve((web,))
    assert envs["web"].values == {"A": "1", "T": "tok-123456", "F": "from-file", "C": "from-cmd"}
    assert envs["web"].secret_keys == {"T", "F", "C"}
    rows = envfile.diff({"A": "0", "T": "old-secret", "GONE": "x"}, envs["web"])
    assert ("A", "changed", "0", "1") in rows and ("T", "changed", "(secret)", "(secret)") in rows
    assert ("GONE", "removed", "(secret)", "") in rows
    from deployer.redact import redact

    assert redact("value tok-123456 here") == "value •••••• here"
    monkeypatch.delenv("TOKEN_X")
    from deployer.errors import ConfigError

    with pytest.raises(ConfigError, match="TOKEN_X is not set"):
        envfile.resolve((web,))


def test_ledger_lines_are_single_short_json_lines():
    line = ledger.entry("deploy", "prod", "failed", who="a@b", release=3, error="x" * 10000, reason="why\nnot")
    assert "\n" not in line and len(line) <= ledger.MAX_LINE
    data = json.loads(line)
    assert data["action"] == "deploy" and data["error"].endswith("...") and data["reason"] == "why\nnot"
    text = line + "\n" + line[:40] + "\n" + "not json\n" + line + "\n"
    assert len(ledger.parse(text, "h1")) == 2


def test_notification_payload_and_failure_always_sent(monkeypatch):
    sent = []

    class Resp:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def read(self, n):
            return b""

    monkeypatch.setattr(urllib.request, "urlopen", lambda req, timeout: sent.append(req) or Resp())
    settings = NotifySettings(webhooks=("https://hooks.example.com/T/B/XYZ",), events=("succeeded",))
    notify.send(settings, "started", {"stage": "prod"})
    assert sent == []  # not subscribed
    notify.send(
        settings, "failed", {"stage": "prod", "app": "shop", "version": "v2", "release": 4, "error": "verify failed"}
    )
    body = json.loads(sent[0].data)
    assert body["event"] == "failed" and body["text"] == "✖ deploy failed: shop v2 to prod (release 4): verify failed"
    assert notify._safe_url("https://hooks.example.com/T/B/XYZ") == "https://hooks.example.com/…"


def test_state_parse_never_takes_an_odd_name_for_a_release():
    out = (
        "current\tlink releases/1\nrelease\t1 1 0 0 0\nrelease\t999999999999999999999 1 0 0 0\n"
        "release\t0007 1 0 0 0\nrelease\t\u0661 1 0 0 0\nodd\t2\n"
        "foreign\t20261202072912\nforeign\tbad name\ndashed\t--help\ndashed\t-v\ndashed\tv\ndashed\t-\nx\n"
        'meta\t1\t{"previous": "x"}\rrelease\t77 1 0 0 0\n'
    )  # \r is no line break here
    st = parse(out)
    assert [r.number for r in st.releases] == [1] and st.highest == 1
    assert st.ignored == ("999999999999999999999", "0007", "--help", "-v", "-") and st.odd_names == 2
    assert [f.name for f in st.foreign] == ["20261202072912"]


def test_foreign_releases_absolute_current_and_the_way_back():
    out = (
        "current\tlink /srv/benchapp/releases/20261202072918\n"
        "foreign\t20261202072912\nforeign\t20261202072918\nforeign\t3\n"
        "fmtime\t3\t1700000000\nfrev\t20261202072918\tabc123\n"
        "fcap\t20261202072912\tBranch main (at deadbeef) deployed as release 20261202072912 by me\n"
        'fdep\t3\t{"created_at": "2021-11-06T20:51:45+0000", "release_name": "3"}\n'
    )
    st = parse(out, "/srv/benchapp/")
    assert st.current_problem() is None and st.live == "20261202072918" and st.current is None
    assert parse(out, "/srv/other").current_problem().startswith("current points outside releases/")
    # ordered by the time each tool recorded; Deployer's numeric name takes its number, timestamps do not
    assert [f.name for f in st.foreign] == ["3", "20261202072912", "20261202072918"]
    assert st.foreign_release("3").time == "2021-11-06T20:51:45Z"
    assert st.foreign_release("20261202072912").revision == "deadbeef"
    assert parse("foreign\tx\nfrev\tx\t\x1b[2Jgone\n").foreign_release("x").revision == ""
    assert planning.next_release_number({"a": st}) == 4
    with pytest.raises(DeployerError, match="another tool made"):
        planning.rollback_target(st)
    assert planning.rollback_target(st, to="20261202072912") == "20261202072912"
    # our first release replaced 20261202072918: rolling back from it goes there
    ours = HostState(
        current_kind="link",
        current_target="releases/4",
        releases=(rel(4, previous="20261202072918"),),
        foreign=st.foreign,
    )
    assert planning.rollback_target(ours) == "20261202072918"
    assert planning.rollback_target(ours, to="3") == "3"
    # foreign releases never count toward keep and go only when asked, never the live one
    assert planning.cleanup(ours, 1, 4, "20261202072918") == []
    assert planning.cleanup(ours, 1, 4, "20261202072918", foreign=True) == ["3", "20261202072912"]
    assert planning.cleanup(st, 1, None, None, foreign=True) == ["3", "20261202072912"]


def test_current_written_as_ansistrano_and_others_write_it():
    """Ansistrano's role writes `current -> ./releases/NAME`; a link that climbs out through `..`
    stays outside releases/."""
    listing = "foreign\t20261202111839Z\n"
    for target in ("./releases/20261202111839Z", "releases/./20261202111839Z/", "releases//20261202111839Z"):
        st = parse(f"current\tlink {target}\n" + listing, "/srv/ansiapp")
        assert st.current_problem() is None and st.live == "20261202111839Z", target
    for target in ("releases/../releases2/x", "./releases/..", "../ansiapp/releases/20261202111839Z"):
        problem = parse(f"current\tlink {target}\n" + listing, "/srv/ansiapp").current_problem()
        assert problem and problem.startswith("current points outside releases/"), target


TERMINAL_ACTS_ON = [
    "\x1b",
    "\x1b[2J",
    "\x07",
    "\x08",
    "\r",
    "\n",
    "\x00",
    "\x7f",
    "\x85",
    "\x9b",
    "\u2028",
    "\u2029",
    *map(chr, range(0x202A, 0x202F)),
    *map(chr, range(0x2066, 0x206A)),
]


def test_nothing_a_terminal_acts_on_is_printed_raw():
    """Control characters (C0, DEL, C1, escape sequences), line/paragraph separators and bidi
    overrides are shown escaped in lines, tables and error lines, never sent as they are."""
    import io

    from deployer.report.output import Output, printable

    shown = {c: printable(f"v{c}1") for c in TERMINAL_ACTS_ON}
    for c, text in shown.items():
        assert text.isprintable() and text.startswith("v\\") and text.endswith("1"), (c, text)
    assert printable("v1.0-é ünïcode ok") == "v1.0-é ünïcode ok"
    assert printable("a\nb\tc\x1b", keep_newlines=True) == "a\nb\tc\\x1b"
    stream = io.StringIO()
    out = Output(stream=stream)
    version = "1.0\x1b[2J\x1b]0;owned\x07\ninjected line\u202e"
    out.table([{"host": "h1", "version": version}])
    out.line("h1", "prepare", version)
    out.say(f"release 3: {version}")
    printed = stream.getvalue()
    assert not any(c in printed for c in TERMINAL_ACTS_ON if c != "\n")
    assert "injected line" in printed and not any(line.startswith("injected") for line in printed.splitlines())


def test_a_known_hosts_line_no_ssh_library_can_read_is_bad_input(tmp_path):
    """Two entries glued on one line: one line naming the file and the line (exit 2), not every
    host failing with paramiko's raw InvalidHostKey. Comments, blank and short lines are fine."""
    from deployer.errors import ConfigError
    from deployer.ssh.known_hosts import check_known_hosts

    key = "AAAAC3NzaC1lZDI1NTE5AAAAIMDtDMCGoGXM63rJnVJkS+k9z7ySUzY9yj7J0JcNBMjy"
    good = f"# pinned\n\n[127.0.0.1]:2200 ssh-ed25519 {key}\nshort line\n"
    path = tmp_path / "known_hosts"
    path.write_text(good)
    check_known_hosts(str(path))
    check_known_hosts(str(tmp_path / "absent"))
    path.write_text(good + f"[127.0.0.1]:2201 ssh-ed25519 {key}[127.0.0.1]:2202 ssh-ed25519 {key}\n")
    with pytest.raises(ConfigError, match=f"^known_hosts {path} line 5 is corrupt"):
        check_known_hosts(str(path))
    import paramiko  # the same line is one paramiko refuses

    with pytest.raises(paramiko.hostkeys.InvalidHostKey):
        paramiko.HostKeys(str(path))
